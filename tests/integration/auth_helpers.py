"""Tokens, keys and hashes for the issue-11 tests (PyJWT, cryptography, bcrypt, argon2-cffi)."""

import base64
import hashlib
import hmac
import json
import os
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SECRET = "0123456789abcdef0123456789abcdef-test"
ISS, AUD = "https://issuer.test", "cello-tests"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict, secret: str = SECRET, alg: str = "HS256", headers: dict | None = None) -> str:
    return jwt.encode(claims, secret, algorithm=alg, headers=headers)


def good_claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "alice", "roles": ["admin"], "iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, **extra}


def unsigned(claims: dict) -> str:
    """`alg: none`: header.payload. (empty signature)."""
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64(json.dumps(claims).encode())}."


def hmac_with(key: bytes, claims: dict, alg: str = "HS256") -> str:
    """An HS256 token signed with arbitrary key bytes (PyJWT refuses PEM keys as HMAC keys,
    which is exactly the key-confusion attack we want to send)."""
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk(key, kid: str) -> dict:
    d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    d.update(kid=kid, alg="RS256", use="sig")
    return d


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def redis_or_skip():
    """A redis-py client for the local Redis; CI fails when it is missing, locally it skips."""
    import pytest
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip(f"no Redis on 127.0.0.1:6379: {exc}")
    return client
