"""Security suite (issue 11): what an auditor sends at the JWT layer. Every case names the
expected status. Server: tests/apps/auth_app.py, HS256 with issuer/audience, leeway 2 s."""

import time

import httpx
import pytest
from auth_helpers import SECRET, good_claims, hmac_with, hs256, public_pem, rsa_key, unsigned

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def app(serve):
    return serve("auth_app", env={"CELLO_TEST_AUTH": "jwt"})


def status(server, token, path="/me"):
    resp = httpx.get(server.url(path), headers={"Authorization": f"Bearer {token}"}, timeout=5)
    if resp.status_code == 401:
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.headers["content-type"] == "application/problem+json"
    return resp.status_code


def test_baseline_valid_token_200(app):
    assert status(app, hs256(good_claims())) == 200


def test_alg_none_401(app):
    assert status(app, unsigned(good_claims())) == 401
    # `None`, `NONE`: the same
    assert status(app, unsigned(good_claims()).replace("none", "NONE")) == 401


def test_other_hmac_algorithm_401(app):
    assert status(app, hs256(good_claims(), alg="HS512", secret=SECRET + SECRET)) == 401
    assert status(app, hs256(good_claims(), alg="HS384")) == 401


def test_expired_401(app):
    now = int(time.time())
    assert status(app, hs256(good_claims(exp=now - 60))) == 401


def test_not_yet_valid_401(app):
    now = int(time.time())
    assert status(app, hs256(good_claims(nbf=now + 60))) == 401


def test_issued_in_the_future_401(app):
    now = int(time.time())
    assert status(app, hs256(good_claims(iat=now + 3600))) == 401


def test_tampered_signature_401(app):
    token = hs256(good_claims())
    head, body, sig = token.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert status(app, f"{head}.{body}.{flipped}") == 401


def test_tampered_payload_401(app):
    token = hs256(good_claims())
    forged = hs256(good_claims(roles=["root"]))
    head, _, sig = token.split(".")
    assert status(app, f"{head}.{forged.split('.')[1]}.{sig}") == 401


def test_wrong_secret_401(app):
    assert status(app, hs256(good_claims(), secret="another-secret-of-enough-length-000")) == 401


def test_wrong_issuer_401(app):
    assert status(app, hs256(good_claims(iss="https://evil.test"))) == 401


def test_wrong_audience_401(app):
    assert status(app, hs256(good_claims(aud="someone-else"))) == 401


def test_missing_audience_401(app):
    claims = good_claims()
    del claims["aud"]
    assert status(app, hs256(claims)) == 401


def test_missing_issuer_401(app):
    claims = good_claims()
    del claims["iss"]
    assert status(app, hs256(claims)) == 401


def test_huge_token_401_not_500(app):
    # ~5.5 KB token: within the header limit, refused by signature (never a 500 or hang)
    claims = good_claims(pad="x" * 4000)
    token = hs256(claims)
    assert status(app, token[:-4] + "AAAA") == 401


def test_token_beyond_header_limit_is_431(app):
    resp = httpx.get(app.url("/me"), headers={"Authorization": "Bearer " + "a" * 20000}, timeout=5)
    assert resp.status_code == 431


def test_hs_rs_key_confusion_401(serve):
    """The server verifies RS256 with a public key; an attacker HMAC-signs with that public
    key's PEM as the secret and claims `alg: HS256`."""
    key = rsa_key()
    pem = public_pem(key)
    server = serve("auth_app", env={"CELLO_TEST_AUTH": "jwt_rs", "CELLO_TEST_JWT_PUBLIC_KEY": pem.decode()})
    assert status(server, hmac_with(pem, {"sub": "mallory"})) == 401
    assert status(server, unsigned({"sub": "mallory"})) == 401
