"""Short contact links for SMS: `PUBLIC_BASE_URL/s/<token>`, a token of 32 characters.

The token is unpadded base64url of a binary payload and a truncated HMAC-SHA256 of it (96 bits,
domain-separated from the other MACs). While survey numbers and contact ids are below 2^32 the
payload is 96 bits, packed big-endian as

    key tag (4 bits) | generation (8) | expiry hour (20) | survey number (32) | contact id (32)

so payload and MAC are 24 bytes, 32 characters. A value that does not fit (an id past 2^32, a
generation past 255, an expiry past 2143) takes the wide layout, 25 bytes of fixed fields, and a
50-character token: the token's length says which layout it is.

- key tag: 4 bits of SHA-256 of the kid; every configured key with that tag is tried (a clash of
  tags costs one more HMAC, never a refusal), so tokens of every SIGNING_KEYS key verify.
- expiry: whole hours since 2024-01-01 UTC, 0 for none: short links expire on the hour, which is
  why the minting side rounds the expiry up (expiry_hour_ceiling) and answers that instant.
- generation: the survey's contact-link generation when the token was signed (revocation).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
import time
from collections.abc import Sequence

from ..settings import SigningKey
from .rules import INT64_MAX
from .signing import _URLSAFE, ContactClaims, ExpiredLink, InvalidLink, _b64, _Hmac

MAC_BYTES = 12  # 96 bits
EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z
HOUR = 3600
COMPACT_CHARS = 32  # 12 + 12 bytes
WIDE_CHARS = 50  # 25 + 12 bytes
_DOMAIN = b"short-link:"
_WIDE = struct.Struct(">BIIQQ")  # tag, generation, expiry hour, survey number, contact id
_URLSAFE_BACK = bytes.maketrans(b"-_", b"+/")
_U32 = 1 << 32


def key_tag(kid: str) -> int:
    """The 4-bit tag of a kid in short tokens."""
    return hashlib.sha256(kid.encode()).digest()[0] >> 4


def expiry_hour_ceiling(exp: int | None) -> int | None:
    """`exp` rounded up to the whole hour a short token can carry (None stays None)."""
    if exp is None:
        return None
    return EPOCH + -(-(exp - EPOCH) // HOUR) * HOUR


def _prepared(secret: bytes) -> _Hmac:
    """The key's HMAC with the domain already absorbed by its inner state: a token's MAC then costs
    two state copies and the payload."""
    mac = _Hmac(secret)
    mac.inner.update(_DOMAIN)
    return mac


class ShortLinks:
    """Signs short tokens with the first key; verifies with any configured key. The HMAC of each key
    is prepared once (its padded inner and outer SHA-256 states, the domain absorbed)."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        self._macs: dict[int, list[_Hmac]] = {}
        for key in keys:
            self._macs.setdefault(key_tag(key.kid), []).append(_prepared(key.secret))
        self._tag = key_tag(keys[0].kid)
        self._mac = _prepared(keys[0].secret)

    def tokens(self, survey_seq: int, contact_ids: Sequence[int], expires_at: int | None,
               generation: int) -> list[bytes]:
        """One token per contact of one survey, as ASCII bytes; `expires_at` must be on the hour
        (expiry_hour_ceiling), it is refused otherwise rather than silently moved."""
        hours = 0
        if expires_at is not None:
            hours, rest = divmod(expires_at - EPOCH, HOUR)
            if rest or hours < 1:
                raise ValueError("a short link expires on a whole hour after 2024-01-01")
        inner, outer = self._mac.inner.copy, self._mac.outer.copy
        to_b64, alphabet = binascii.b2a_base64, _URLSAFE
        compact = 1 <= generation < 256 and hours < (1 << 20) and survey_seq < _U32
        head = ((self._tag << 28 | generation << 20 | hours) << 32 | survey_seq) << 32
        out: list[bytes] = []
        append = out.append
        for contact_id in contact_ids:
            if compact and contact_id < _U32:
                payload = (head | contact_id).to_bytes(12, "big")
            else:
                payload = _WIDE.pack(self._tag, generation, hours, survey_seq, contact_id)
            digest = inner()
            digest.update(payload)
            mac = outer()
            mac.update(digest.digest())
            append(to_b64(payload + mac.digest()[:MAC_BYTES], newline=False).translate(alphabet).rstrip(b"="))
        return out

    def token(self, survey_seq: int, contact_id: int, expires_at: int | None, generation: int) -> str:
        return self.tokens(survey_seq, (contact_id,), expires_at, generation)[0].decode("ascii")

    def verify(self, token: str, now: float | None = None) -> ContactClaims:
        """The claims of a short token, or InvalidLink (malformed, unknown key, wrong MAC) or
        ExpiredLink; no I/O, so a forged token costs at most an HMAC per key sharing its tag."""
        if len(token) not in (COMPACT_CHARS, WIDE_CHARS) or not token.isascii():
            raise InvalidLink("not a short token")
        try:
            raw = binascii.a2b_base64(token.encode().translate(_URLSAFE_BACK) + b"=" * (-len(token) % 4),
                                      strict_mode=True)
        except binascii.Error:
            raise InvalidLink("not base64url") from None
        if _b64(raw) != token:  # one spelling per token: no other characters, no stray low bits
            raise InvalidLink("not canonical base64url")
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(payload) == 12:
            value = int.from_bytes(payload, "big")
            tag, generation, hours = value >> 92, (value >> 84) & 0xFF, (value >> 64) & 0xFFFFF
            survey, contact = (value >> 32) & 0xFFFFFFFF, value & 0xFFFFFFFF
        else:
            tag, generation, hours, survey, contact = _WIDE.unpack(payload)
        candidates = self._macs.get(tag)
        if not candidates:
            raise InvalidLink("unknown key")
        if not any(hmac.compare_digest(m.digest(payload)[:MAC_BYTES], mac) for m in candidates):
            raise InvalidLink("signature refused")
        if not (1 <= survey <= INT64_MAX and 1 <= contact <= INT64_MAX and generation >= 1):
            raise InvalidLink("claims are not ids")
        expires_at = EPOCH + hours * HOUR if hours else None
        if expires_at is not None and expires_at <= (time.time() if now is None else now):
            raise ExpiredLink()
        return ContactClaims(survey, contact, expires_at, generation)
