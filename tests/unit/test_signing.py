"""The link signer: byte-identical to PyJWT, verified by PyJWT, and refusing every forgery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random

import jwt
import pytest

from service.core.signing import ExpiredLink, InvalidLink, LinkSigner
from service.settings import SigningKey

OLD = SigningKey("k1", b"old-secret-old-secret-old-secret-0001")
NEW = SigningKey("k2", b"new-secret-new-secret-new-secret-0002")


def pyjwt_token(key: SigningKey, claims: dict) -> str:
    return jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": key.kid, "typ": None})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, signature: str = "") -> str:
    encode = lambda part: b64(json.dumps(part, separators=(",", ":")).encode())  # noqa: E731
    return f"{encode(header)}.{encode(claims)}.{signature}"


@pytest.mark.parametrize("secret_length", [32, 63, 64, 65, 200])
def test_tokens_are_byte_identical_to_pyjwt(secret_length):
    rng = random.Random(secret_length)
    key = SigningKey("kid-" + str(secret_length), bytes(rng.randrange(256) for _ in range(secret_length)))
    signer = LinkSigner([key])
    for _ in range(200):
        seq, contact = rng.randrange(1, 10**9), rng.randrange(1, 2**63)
        exp = rng.choice([None, rng.randrange(10**9, 4 * 10**9)])
        claims = {"s": seq, "c": contact} if exp is None else {"s": seq, "c": contact, "exp": exp}
        assert signer.contact_token(seq, contact, exp) == pyjwt_token(key, claims)


def test_batch_equals_one_by_one():
    signer = LinkSigner([NEW])
    ids = list(range(1, 300))
    assert signer.contact_tokens(7, ids, 2_000_000_000) == [signer.contact_token(7, i, 2_000_000_000) for i in ids]
    assert signer.contact_tokens(7, [], None) == []


def test_pyjwt_verifies_with_the_right_key_only():
    token = LinkSigner([NEW]).contact_token(12, 345, 4_000_000_000)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k2"}
    assert jwt.decode(token, NEW.secret, algorithms=["HS256"]) == {"s": 12, "c": 345, "exp": 4_000_000_000}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, OLD.secret, algorithms=["HS256"])


def test_verify_answers_the_claims():
    signer = LinkSigner([NEW])
    claims = signer.verify_contact_token(signer.contact_token(12, 345, None))
    assert (claims.survey_seq, claims.contact_id, claims.expires_at) == (12, 345, None)
    claims = signer.verify_contact_token(signer.contact_token(12, 345, 1000), now=999)
    assert (claims.survey_seq, claims.contact_id, claims.expires_at) == (12, 345, 1000)


def test_expiry_uses_the_injected_clock():
    signer = LinkSigner([NEW])
    token = signer.contact_token(1, 2, 1_000_000)
    assert signer.verify_contact_token(token, now=999_999).expires_at == 1_000_000
    for now in (1_000_000, 1_000_001, 5_000_000):
        with pytest.raises(ExpiredLink):
            signer.verify_contact_token(token, now=now)


def test_wrong_key_with_a_known_kid_is_refused():
    forged = pyjwt_token(SigningKey("k2", b"attacker-secret-attacker-secret-0003"), {"s": 1, "c": 2})
    with pytest.raises(InvalidLink):
        LinkSigner([NEW]).verify_contact_token(forged)


def test_unknown_kid_is_refused():
    token = pyjwt_token(SigningKey("k9", NEW.secret), {"s": 1, "c": 2})
    with pytest.raises(InvalidLink):
        LinkSigner([NEW, OLD]).verify_contact_token(token)


@pytest.mark.parametrize("header", [
    {"alg": "none", "kid": "k2"},
    {"alg": "HS512", "kid": "k2"},
    {"alg": "HS256"},
    {"alg": "HS256", "kid": 2},
])
def test_other_algorithms_and_headers_are_refused(header):
    signer = LinkSigner([NEW])
    unsigned = forge(header, {"s": 1, "c": 2})
    with pytest.raises(InvalidLink):
        signer.verify_contact_token(unsigned)


def test_a_validly_signed_hs512_token_is_refused():
    key = SigningKey("k5", b"s" * 64)
    real = jwt.encode({"s": 1, "c": 2}, key.secret, algorithm="HS512", headers={"kid": "k5"})
    with pytest.raises(InvalidLink):
        LinkSigner([key]).verify_contact_token(real)


def test_tampered_payload_is_refused():
    signer = LinkSigner([NEW])
    header, _, signature = signer.contact_token(12, 345, None).split(".")
    other = b64(b'{"s":12,"c":346}')
    with pytest.raises(InvalidLink):
        signer.verify_contact_token(f"{header}.{other}.{signature}")


@pytest.mark.parametrize("claims", [{"s": 1}, {"c": 1}, {"s": "1", "c": 2}, {"s": 1, "c": 2.0},
                                    {"s": 1, "c": 2, "exp": "soon"}, {"s": True, "c": 2},
                                    {"s": 1, "c": 2**70}, {"s": 2**63, "c": 2}, {"s": 0, "c": 2}, {"s": 1, "c": -5}])
def test_validly_signed_but_malformed_claims_are_refused(claims):
    with pytest.raises(InvalidLink):
        LinkSigner([NEW]).verify_contact_token(pyjwt_token(NEW, claims))


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "x" * 2000, "..", "eyJ.eyJ.sig"])
def test_garbage_is_refused(token):
    with pytest.raises(InvalidLink):
        LinkSigner([NEW]).verify_contact_token(token)


def test_rotation_keeps_old_links_and_signs_with_the_new_key():
    before = LinkSigner([OLD])
    old_token = before.contact_token(5, 6, None)
    old_link = before.created_link_token("abc123")
    after = LinkSigner([NEW, OLD])
    assert after.verify_contact_token(old_token).contact_id == 6
    assert after.verify_created_link(old_link) == "abc123"
    new_token = after.contact_token(5, 6, None)
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    assert after.created_link_token("abc123").startswith("k2.abc123.")
    # once the old key is dropped, its links stop opening
    with pytest.raises(InvalidLink):
        LinkSigner([NEW]).verify_contact_token(old_token)


def test_created_links_refuse_alteration():
    signer = LinkSigner([NEW, OLD])
    token = signer.created_link_token("abc123")
    kid, public_id, mac = token.split(".")
    assert signer.verify_created_link(token) == "abc123"
    for bad in (f"{kid}.abc124.{mac}", f"k1.{public_id}.{mac}", f"k9.{public_id}.{mac}",
                f"{kid}.{public_id}.{'y' if mac[0] == 'x' else 'x'}{mac[1:]}", f"{kid}.{public_id}", token + ".x"):
        with pytest.raises(InvalidLink):
            signer.verify_created_link(bad)


def test_link_length_for_a_30_character_base_url():
    base = "https://surveys.example.com/ab"  # 30 characters
    assert len(base) == 30
    signer = LinkSigner([SigningKey("k2", NEW.secret)])
    assert len(f"{base}/c/{signer.contact_token(1234, 1_234_567, None)}") == 143
    assert len(f"{base}/c/{signer.contact_token(1234, 1_234_567, 1_767_225_600)}") == 165


@pytest.mark.parametrize("secret_length", [32, 64, 65, 200])
def test_created_link_mac_is_the_standard_hmac(secret_length):
    # links already handed out must keep opening: the MAC is HMAC-SHA256 as hmac computes it, truncated
    key = SigningKey("k3", bytes(range(7, 7 + secret_length)))
    token = LinkSigner([key]).created_link_token("Zx9-public_id")
    expected = hmac.new(key.secret, b"survey-link:Zx9-public_id", hashlib.sha256).digest()[:16]
    assert token == f"k3.Zx9-public_id.{b64(expected)}"
