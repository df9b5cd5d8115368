"""Signed links under attack: every forgery refused by the signer, and through /c/ and /l/ (404, or
410 for an expired link), before any database lookup."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from service.core.signing import ExpiredLink, InvalidLink, LinkSigner
from service.settings import SigningKey
from tests.conftest import TEST_KEYS
from tests.security.conftest import World, family_error

KEY = TEST_KEYS[0]
ATTACKER = b"attacker-chosen-secret-attacker-chosen-secret"
SIGNER = LinkSigner(TEST_KEYS)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(part: object) -> str:
    return b64(json.dumps(part, separators=(",", ":")).encode())


def hs(header: dict, claims: dict, secret: bytes, digest=hashlib.sha256) -> str:
    """A JWT with any header, MACed by hand (so PyJWT's own refusals cannot get in the way)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    return f"{signing_input}.{b64(hmac.digest(secret, signing_input.encode(), digest))}"


def contact_forgeries(s: int, c: int) -> dict[str, str]:
    """Tokens for survey number `s` and contact `c` that must never open."""
    claims = {"s": s, "c": c}
    real = SIGNER.contact_token(s, c, None)
    header, payload, signature = real.split(".")
    now = int(time.time())
    return {
        "alg none, no signature": f"{segment({'alg': 'none', 'kid': KEY.kid})}.{payload}.",
        "alg none, real signature": f"{segment({'alg': 'none', 'kid': KEY.kid})}.{payload}.{signature}",
        "alg None spelled": f"{segment({'alg': 'None', 'kid': KEY.kid})}.{payload}.",
        # algorithm confusion: an asymmetric alg whose "public key" would be our HMAC secret
        "RS256 header, HMAC with our secret": hs({"alg": "RS256", "kid": KEY.kid}, claims, KEY.secret),
        "ES256 header, HMAC with our secret": hs({"alg": "ES256", "kid": KEY.kid}, claims, KEY.secret),
        "HS512 with our secret": hs({"alg": "HS512", "kid": KEY.kid}, claims, KEY.secret, hashlib.sha512),
        "HS384 with our secret": hs({"alg": "HS384", "kid": KEY.kid}, claims, KEY.secret, hashlib.sha384),
        "embedded jwk of the attacker": hs({"alg": "HS256", "kid": KEY.kid,
                                            "jwk": {"kty": "oct", "k": b64(ATTACKER)}}, claims, ATTACKER),
        "jku of the attacker": hs({"alg": "HS256", "kid": KEY.kid, "jku": "https://evil.example/k"}, claims,
                                  ATTACKER),
        "our kid, attacker's secret": hs({"alg": "HS256", "kid": KEY.kid}, claims, ATTACKER),
        "unknown kid, our secret": hs({"alg": "HS256", "kid": "t9"}, claims, KEY.secret),
        "kid path traversal": hs({"alg": "HS256", "kid": f"../{KEY.kid}"}, claims, KEY.secret),
        "kid SQL": hs({"alg": "HS256", "kid": f"{KEY.kid}' OR '1'='1"}, claims, KEY.secret),
        "kid null": hs({"alg": "HS256", "kid": None}, claims, KEY.secret),
        "kid list": hs({"alg": "HS256", "kid": [KEY.kid]}, claims, KEY.secret),
        "kid number": hs({"alg": "HS256", "kid": 1}, claims, KEY.secret),
        "no kid": hs({"alg": "HS256"}, claims, KEY.secret),
        "empty kid (empty key)": hs({"alg": "HS256", "kid": ""}, claims, b""),
        "tampered contact": f"{header}.{segment({'s': s, 'c': c + 1})}.{signature}",
        "tampered survey": f"{header}.{segment({'s': s + 1, 'c': c})}.{signature}",
        "exp removed from an expiring token": _without_exp(s, c),
        "signature bit flipped": f"{header}.{payload}.{_flip(signature)}",
        "signature truncated": f"{header}.{payload}.{signature[:-4]}",
        "signature empty": f"{header}.{payload}.",
        "signature of another token": f"{header}.{payload}.{SIGNER.contact_token(s, c + 1, None).split('.')[2]}",
        "far-future iat": hs({"alg": "HS256", "kid": KEY.kid}, {**claims, "iat": now + 3600}, KEY.secret),
        "iat as a string": hs({"alg": "HS256", "kid": KEY.kid}, {**claims, "iat": str(now)}, KEY.secret),
        "exp as a string": hs({"alg": "HS256", "kid": KEY.kid}, {**claims, "exp": str(now + 3600)}, KEY.secret),
        "exp as a float": hs({"alg": "HS256", "kid": KEY.kid}, {**claims, "exp": now + 3600.5}, KEY.secret),
        "contact as a string": hs({"alg": "HS256", "kid": KEY.kid}, {"s": s, "c": str(c)}, KEY.secret),
        "contact as a bool": hs({"alg": "HS256", "kid": KEY.kid}, {"s": s, "c": True}, KEY.secret),
        "claims not an object": f"{header}.{segment([s, c])}.{signature}",
        "four segments": f"{real}.{signature}",
        "whitespace inside": f"{header}. {payload}.{signature}",
    }


def _flip(signature: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 1
    return b64(bytes(raw))


def _without_exp(s: int, c: int) -> str:
    header, _, signature = SIGNER.contact_token(s, c, int(time.time()) + 60).split(".")
    return f"{header}.{segment({'s': s, 'c': c})}.{signature}"


@pytest.mark.parametrize("name", list(contact_forgeries(3, 4)))
def test_signer_refuses_contact_forgery(name):
    with pytest.raises(InvalidLink):
        SIGNER.verify_contact_token(contact_forgeries(3, 4)[name])


def test_signer_accepts_the_genuine_token_and_refuses_an_expired_one():
    """The positive control, so the refusals above are about the forgery, not a broken verifier."""
    assert SIGNER.verify_contact_token(SIGNER.contact_token(3, 4, None)).contact_id == 4
    now = int(time.time())
    with_iat = hs({"alg": "HS256", "kid": KEY.kid}, {"s": 3, "c": 4, "iat": now + 30}, KEY.secret)
    assert SIGNER.verify_contact_token(with_iat).contact_id == 4  # within the clock-skew leeway
    assert jwt.decode(SIGNER.contact_token(3, 4, None), KEY.secret, algorithms=["HS256"]) == {"s": 3, "c": 4}
    with pytest.raises(ExpiredLink):
        SIGNER.verify_contact_token(SIGNER.contact_token(3, 4, now - 1))
    with pytest.raises(ExpiredLink):
        SIGNER.verify_contact_token(hs({"alg": "HS256", "kid": KEY.kid}, {"s": 3, "c": 4, "exp": now}, KEY.secret))


def created_forgeries(token: str) -> dict[str, str]:
    kid, public_id, mac = token.split(".")
    other_mac = SIGNER.created_link_token(public_id[:-1] + ("0" if public_id[-1] != "0" else "1")).split(".")[2]
    attacker = LinkSigner([SigningKey(kid, ATTACKER)]).created_link_token(public_id)
    return {
        "public id altered": f"{kid}.{public_id[:-1]}{'0' if public_id[-1] != '0' else '1'}.{mac}",
        "mac of another public id": f"{kid}.{public_id}.{other_mac}",
        "mac altered": f"{kid}.{public_id}.{_flip(mac)}",
        "mac truncated": f"{kid}.{public_id}.{mac[:-2]}",
        "mac empty": f"{kid}.{public_id}.",
        "mac with padding": f"{kid}.{public_id}.{mac}==",
        "mac upper-cased": f"{kid}.{public_id}.{mac.upper()}" if mac.upper() != mac else f"{kid}.{public_id}.x",
        "attacker's secret under our kid": attacker,
        "unknown kid": f"zz.{public_id}.{mac}",
        "empty kid": f".{public_id}.{mac}",
        "kid path traversal": f"..%2F{kid}.{public_id}.{mac}",
        "no mac": f"{kid}.{public_id}",
        "extra part": f"{token}.x",
        "a JWT instead": SIGNER.contact_token(1, 1, None),
    }


def test_signer_refuses_created_link_forgeries():
    token = SIGNER.created_link_token("0123456789abcdef")
    assert SIGNER.verify_created_link(token) == "0123456789abcdef"
    forgeries = created_forgeries(token)
    assert token not in forgeries.values()
    accepted, other_errors = [], []
    for name, forged in forgeries.items():
        try:
            public_id = SIGNER.verify_created_link(forged)
        except InvalidLink:
            continue
        except Exception as exc:  # a crash is a failure too, named with its forgery
            other_errors.append((name, repr(exc)))
        else:
            accepted.append((name, public_id))
    assert accepted == [] and other_errors == []


async def test_contact_forgeries_are_404_through_c(client, world: World):
    claims = jwt.decode(world.contact_token, KEY.secret, algorithms=["HS256"])
    assert (await client.get(f"/c/{world.contact_token}")).status == 200  # the genuine link opens
    for name, forged in contact_forgeries(claims["s"], claims["c"]).items():
        resp = await client.get(f"/c/{forged}")
        status, body = await family_error(resp)
        assert status == 404, (name, body)
        assert body["error"]["details"] == [{"field": "token", "issue": "not found"}], name
    expired = SIGNER.contact_token(claims["s"], claims["c"], int(time.time()) - 1)
    status, body = await family_error(await client.get(f"/c/{expired}"))
    assert status == 410 and body["error"]["details"] == [{"field": "link", "issue": "this link has expired"}]


async def test_created_link_forgeries_are_404_through_l(client, world: World):
    assert (await client.get(f"/l/{world.created_token}")).status == 200  # the genuine link opens
    for name, forged in created_forgeries(world.created_token).items():
        resp = await client.get(f"/l/{forged}")
        status, body = await family_error(resp)
        assert status == 404, (name, body)
    # a link is bound to its kind: a created-link token is no contact token, and back
    assert (await client.get(f"/c/{world.created_token}")).status == 404
    assert (await client.get(f"/l/{world.contact_token}")).status == 404
