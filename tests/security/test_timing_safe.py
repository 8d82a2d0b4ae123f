"""Security suite (issue 11), code-review item: secrets are compared in constant time.

Cited lines (checked below so they cannot silently regress):
- server/src/auth/mod.rs `constant_time_eq`: SHA-256 of both sides, then `subtle::ConstantTimeEq`
  (no early exit on the first differing byte, nor on length).
- server/src/auth/api_key.rs: every configured key is compared (no early return on a match).
- server/src/auth/basic.rs: plain passwords via `constant_time_eq`; an unknown user is
  compared against a dummy password so that case costs the same; hashes via argon2/bcrypt.
- JWT signatures: jsonwebtoken verifies HMAC with ring's constant-time `hmac::verify`.
- python/cello/guards.py `constant_time_compare`: `hmac.compare_digest`.
"""

import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def source(rel):
    return (ROOT / rel).read_text()


def test_rust_constant_time_eq_hashes_then_uses_subtle():
    src = source("server/src/auth/mod.rs")
    body = src[src.index("pub fn constant_time_eq") :]
    body = body[: body.index("\n}\n")]
    assert "digest(&SHA256" in body and "ct_eq" in body
    assert "==" not in body.replace("ha.as_ref().ct_eq", "")


def test_api_keys_and_basic_passwords_use_it():
    api = source("server/src/auth/api_key.rs")
    assert "constant_time_eq(&key, k)" in api
    assert not re.search(r"\bbreak\b|return Verdict::Pass", api.split("for (k, id)")[1].split("match found")[0])
    basic = source("server/src/auth/basic.rs")
    assert "Password::Plain(p) => constant_time_eq(" in basic
    assert "self.dummy.matches(&password)" in basic


def test_python_constant_time_compare_uses_compare_digest():
    from cello.guards import constant_time_compare

    assert "compare_digest" in inspect.getsource(constant_time_compare)
    assert constant_time_compare("abc", "abc") and not constant_time_compare("abc", "abd")
