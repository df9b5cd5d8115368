"""The short-token codec (core/short_links.py): its length bound, its layout, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from service.core.short_links import (
    COMPACT_CHARS,
    EPOCH,
    HOUR,
    MAC_BYTES,
    WIDE_CHARS,
    ShortLinks,
    expiry_hour_ceiling,
    key_tag,
)
from service.core.signing import ContactClaims, ExpiredLink, InvalidLink
from service.settings import SigningKey

KEY = SigningKey("t1", b"test-signing-secret-number-one-0123456789")
NEW = SigningKey("t2", b"the-rotated-in-signing-secret-0123456789")
CODEC = ShortLinks([KEY])
U32_MAX = 2**32 - 1
LAST_HOUR = EPOCH + (2**20 - 1) * HOUR  # the latest expiry of the compact layout (in 2143)
NOW = 1_800_000_000


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_30_character_base_url_and_the_largest_compact_values_make_65_characters():
    base = "https://sms.example.com/abcdef"
    assert len(base) == 30
    token = CODEC.token(U32_MAX, U32_MAX, LAST_HOUR, 255)
    url = f"{base}/s/{token}"
    assert (len(token), len(url)) == (32, 65)
    assert CODEC.verify(token, now=NOW) == ContactClaims(U32_MAX, U32_MAX, LAST_HOUR, 255)
    # and the smallest values take no fewer characters: every SMS link of a survey has one length
    assert len(CODEC.token(1, 1, None, 1)) == COMPACT_CHARS


@pytest.mark.parametrize(("seq", "contact", "exp", "generation"), [
    (1, 1, None, 1), (7, 123_456, EPOCH + HOUR, 2), (U32_MAX, 1, None, 255), (1, U32_MAX, LAST_HOUR, 1),
    (2**31, 2**31 + 5, EPOCH + 1000 * HOUR, 128),
])
def test_compact_round_trip(seq, contact, exp, generation):
    token = CODEC.token(seq, contact, exp, generation)
    assert len(token) == COMPACT_CHARS
    assert CODEC.verify(token, now=EPOCH) == ContactClaims(seq, contact, exp, generation)


@pytest.mark.parametrize(("seq", "contact", "exp", "generation"), [
    (2**32, 1, None, 1), (1, 2**32, None, 1), (2**63 - 1, 2**63 - 1, LAST_HOUR, 1),
    (5, 6, None, 256), (5, 6, LAST_HOUR + HOUR, 3),
])
def test_what_does_not_fit_takes_the_wide_layout(seq, contact, exp, generation):
    token = CODEC.token(seq, contact, exp, generation)
    assert len(token) == WIDE_CHARS
    assert CODEC.verify(token, now=EPOCH) == ContactClaims(seq, contact, exp, generation)


def test_the_layout_and_the_mac_are_as_documented():
    token = CODEC.token(0x01020304, 0x0A0B0C0D, EPOCH + 5 * HOUR, 9)
    data = raw(token)
    payload, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    value = key_tag("t1") << 92 | 9 << 84 | 5 << 64 | 0x01020304 << 32 | 0x0A0B0C0D
    assert payload == value.to_bytes(12, "big")
    # the precomputed HMAC is the standard one, truncated to 96 bits
    assert mac == hmac.digest(KEY.secret, b"short-link:" + payload, hashlib.sha256)[:12]
    assert key_tag("t1") == hashlib.sha256(b"t1").digest()[0] >> 4


def test_expiry_is_rounded_up_to_the_hour_and_must_be_on_one():
    assert expiry_hour_ceiling(None) is None
    assert expiry_hour_ceiling(EPOCH + 3 * HOUR) == EPOCH + 3 * HOUR
    assert expiry_hour_ceiling(EPOCH + 3 * HOUR + 1) == EPOCH + 4 * HOUR
    for exp in (EPOCH + 3 * HOUR + 1, EPOCH, EPOCH - HOUR):
        with pytest.raises(ValueError, match="whole hour"):
            CODEC.token(1, 1, exp, 1)


def test_expired_tokens_are_refused_at_their_hour():
    exp = EPOCH + 100 * HOUR
    token = CODEC.token(3, 4, exp, 1)
    assert CODEC.verify(token, now=exp - 1).expires_at == exp
    for now in (exp, exp + 1):
        with pytest.raises(ExpiredLink):
            CODEC.verify(token, now=now)


def test_every_altered_byte_is_refused():
    for token in (CODEC.token(11, 22, EPOCH + HOUR, 3), CODEC.token(2**40, 22, None, 3)):
        data = raw(token)
        for i in range(len(data)):
            for bit in (0x01, 0x80):
                altered = bytearray(data)
                altered[i] ^= bit
                with pytest.raises(InvalidLink):
                    CODEC.verify(b64(bytes(altered)), now=NOW)


def test_wrong_key_unknown_key_and_malformed_tokens_are_refused():
    token = CODEC.token(11, 22, None, 1)
    wrong_secret = ShortLinks([SigningKey("t1", b"not-the-real-secret-not-the-real-secret")]).token(11, 22, None, 1)
    assert key_tag("zz") != key_tag("t1")
    unknown_kid = ShortLinks([SigningKey("zz", KEY.secret)]).token(11, 22, None, 1)
    refused = {
        "wrong secret": (wrong_secret, "signature refused"),
        "unknown key id": (unknown_kid, "unknown key"),
        "truncated": (token[:-1], "not a short token"),
        "one character more": (token + "A", "not a short token"),
        "too long": (token * 40, "not a short token"),
        "empty": ("", "not a short token"),
        "standard base64 alphabet": (b64(raw(token)).replace("-", "+").replace("_", "/")
                                     if ("-" in token or "_" in token) else "+" + token[1:], "base64url"),
        "padding": (token[:-1] + "=", "base64url"),
        "non-ASCII": (token[:-1] + "é", "not a short token"),
        "a dot": (token[:-1] + ".", "base64url"),
        "MAC of another token": (token[:-16] + CODEC.token(11, 23, None, 1)[-16:], "signature refused"),
    }
    for name, (forged, reason) in refused.items():
        with pytest.raises(InvalidLink, match=reason):
            CODEC.verify(forged, now=NOW)
        assert forged != token, name


def test_stray_low_bits_of_the_wide_layout_are_refused():
    token = CODEC.token(2**40, 5, None, 1)
    # 37 bytes: the last character carries 4 bits that must be zero
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(token[-1])
    altered = token[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]
    assert altered != token and raw(altered) == raw(token)
    with pytest.raises(InvalidLink, match="not canonical"):
        CODEC.verify(altered, now=NOW)


def test_rotation_every_configured_key_verifies_the_first_signs():
    old = CODEC.token(5, 6, None, 1)
    rotated = ShortLinks([NEW, KEY])
    assert rotated.verify(old, now=NOW) == ContactClaims(5, 6, None, 1)
    new = rotated.token(5, 6, None, 1)
    assert raw(new)[0] >> 4 == key_tag("t2") != key_tag("t1")
    assert rotated.verify(new, now=NOW) == ContactClaims(5, 6, None, 1)
    with pytest.raises(InvalidLink, match="unknown key"):
        CODEC.verify(new, now=NOW)


def test_keys_sharing_a_tag_are_each_tried():
    twin = SigningKey("k1", b"another-secret-with-the-same-4-bit-tag!!")
    assert key_tag("k1") == key_tag("t1")
    both = ShortLinks([twin, KEY])
    assert both.verify(CODEC.token(5, 6, None, 1), now=NOW) == ContactClaims(5, 6, None, 1)
    assert both.verify(ShortLinks([twin]).token(5, 6, None, 1), now=NOW) == ContactClaims(5, 6, None, 1)
    with pytest.raises(InvalidLink, match="signature refused"):
        CODEC.verify(ShortLinks([twin]).token(5, 6, None, 1), now=NOW)


def test_a_signed_zero_id_or_generation_is_refused():
    for seq, contact, generation in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        with pytest.raises(InvalidLink, match="claims are not ids"):
            CODEC.verify(CODEC.token(seq, contact, None, generation), now=NOW)
