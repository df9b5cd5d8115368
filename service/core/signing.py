"""Signed links.

Contact links carry an HS256 JWT (`kid` in the header; claims `s` survey number, `c` contact id,
`g` the survey's link generation when past the first, `exp` when asked). A token without `g` is of
the first generation, so tokens of the first stay byte for byte what they were before generations.
Tokens are built by a signer that precomputes each key's header and is byte-identical to
`jwt.encode(claims, secret, "HS256", headers={"kid": kid, "typ": None})`;
PyJWT stays the verifier.

Created (Filum) links carry `<kid>.<public_id>.<mac>`: a truncated HMAC-SHA256 of the public id,
so a forged or altered link is refused before any database lookup.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jwt
import orjson

from ..settings import SigningKey
from .rules import INT64_MAX

_MAC_BYTES = 16
_LINK_DOMAIN = b"survey-link:"
# issued-at further in the future than this is refused (clock skew between instances)
_LEEWAY_SECONDS = 60
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    """Unpadded base64url, as JWTs write it."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


class _Hmac:
    """HMAC-SHA256 (RFC 2104) of one key, from hashlib SHA-256 states with the padded key already absorbed.

    Copying them is the cheapest HMAC the public API offers: 0.62 us a token against 1.02 us for a
    prepared `hmac.new(...).copy()` and 1.57 us for `hmac.digest` (CPython 3.11, OpenSSL 3); the
    tokens are compared with hmac's and PyJWT's in tests/unit/test_signing*.py."""

    __slots__ = ("inner", "outer")

    def __init__(self, secret: bytes) -> None:
        block = (secret if len(secret) <= 64 else hashlib.sha256(secret).digest()).ljust(64, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, message: bytes) -> bytes:
        inner = self.inner.copy()
        inner.update(message)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()


# surveys.link_generation is an integer column: a claim past it names no generation
_GENERATION_MAX = 2**31 - 1


@dataclass(frozen=True)
class ContactClaims:
    survey_seq: int
    contact_id: int
    expires_at: int | None
    # the survey's link generation the token was issued in (core/revocation.py compares it)
    generation: int = 1


class InvalidLink(Exception):
    """The link does not verify: forged, altered, unknown key, or malformed."""


class ExpiredLink(Exception):
    """The link verified but its `exp` has passed."""


def _accept(survey: object, contact: object, exp: object, iat: object, now: float | None,
            generation: object = 1) -> ContactClaims:
    """The checks after the signature: integer claims, not issued in the future, not expired."""
    if type(survey) is not int or type(contact) is not int:
        raise InvalidLink("claims are not integers")
    if type(generation) is not int or not 1 <= generation <= _GENERATION_MAX:
        raise InvalidLink("generation is not a generation")
    # survey numbers and contact ids are positive bigints: a claim outside them names no row (and past
    # INT64_MAX would not even fit the query's parameter)
    if not (1 <= survey <= INT64_MAX and 1 <= contact <= INT64_MAX):
        raise InvalidLink("claims are not ids")
    if exp is not None and type(exp) is not int:
        raise InvalidLink("exp is not an integer")
    current = time.time() if now is None else now
    if iat is not None and (type(iat) is not int or iat > current + _LEEWAY_SECONDS):
        raise InvalidLink("issued in the future")
    if exp is not None and exp <= current:
        raise ExpiredLink()
    return ContactClaims(survey, contact, exp, generation)


class LinkSigner:
    """Signs with the first key; verifies with any listed key."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = {k.kid: k.secret for k in keys}
        self._macs = {k.kid: _Hmac(k.secret) for k in keys}
        self._kid = keys[0].kid
        # the header segment of every key's tokens, as we issue them
        self._by_header = {_b64(orjson.dumps({"alg": "HS256", "kid": k.kid})): (self._macs[k.kid], k.secret)
                           for k in keys}
        header = orjson.dumps({"alg": "HS256", "kid": self._kid})
        self._header_b64 = _b64(header) + "."
        self._mac_of = self._macs[self._kid]

    @property
    def kid(self) -> str:
        return self._kid

    def contact_token(self, survey_seq: int, contact_id: int, expires_at: int | None, generation: int = 1) -> str:
        """A compact HS256 JWT naming the survey and the contact (and the survey's link generation)."""
        return self.contact_tokens(survey_seq, (contact_id,), expires_at, generation)[0]

    def contact_tokens(self, survey_seq: int, contact_ids: Sequence[int], expires_at: int | None,
                       generation: int = 1) -> list[str]:
        """One token per contact of one survey."""
        return [token.decode("ascii")
                for token in self.contact_token_bytes(survey_seq, contact_ids, expires_at, generation)]

    def contact_token_bytes(self, survey_seq: int, contact_ids: Sequence[int], expires_at: int | None,
                            generation: int = 1) -> list[bytes]:
        """The tokens as ASCII bytes (what the CSV export writes), with the per-token work cut to the minimum."""
        header = self._header_b64.encode("ascii")
        inner, outer = self._mac_of.inner.copy, self._mac_of.outer.copy
        to_b64, alphabet = binascii.b2a_base64, _URLSAFE
        # the first generation is written as no claim at all: its tokens are those issued before generations
        gen = b"" if generation == 1 else b',"g":%d' % generation
        if expires_at is None:
            template = b'{"s":%d,"c":%%d%s}' % (survey_seq, gen)
        else:
            template = b'{"s":%d,"c":%%d%s,"exp":%d}' % (survey_seq, gen, expires_at)
        tokens: list[bytes] = []
        append = tokens.append
        for contact_id in contact_ids:
            signing_input = header + to_b64(template % contact_id, newline=False).translate(alphabet).rstrip(b"=")
            # HMAC-SHA256 (RFC 2104) from the precomputed inner and outer states
            digest = inner()
            digest.update(signing_input)
            mac = outer()
            mac.update(digest.digest())
            append(signing_input + b"." + to_b64(mac.digest(), newline=False).translate(alphabet).rstrip(b"="))
        return tokens

    def verify_contact_token(self, token: str, now: float | None = None) -> ContactClaims:
        """Verify with PyJWT and the key the header names; never trust the header's algorithm.

        Forged links are the cheap case: a token with one of our own headers and a wrong MAC is
        refused here, at the cost of one HMAC and before PyJWT (which would refuse it too: it
        accepts only the canonical encoding of the MAC; tests/unit/test_signing_fast.py compares
        the two on many tokens). Every token that is accepted is accepted by PyJWT.
        """
        if len(token) > 1024:
            raise InvalidLink("token too long")
        if token.isascii():
            signing_input, _, crypto = token.rpartition(".")
            head, dot, _payload = signing_input.partition(".")
            ours = self._by_header.get(head) if dot else None
            if ours is not None:
                # the canonical MAC, with or without the one `=` that pads 43 characters to 44
                expected = _b64(ours[0].digest(signing_input.encode()))
                if not (hmac.compare_digest(crypto, expected) or hmac.compare_digest(crypto, expected + "=")):
                    raise InvalidLink("signature refused")
                # the header is byte for byte one we issue: its key is known without parsing it first
                return self._decode_with_pyjwt(token, ours[1], now)
        return self._verify_with_pyjwt(token, now)

    def _verify_with_pyjwt(self, token: str, now: float | None = None) -> ContactClaims:
        """PyJWT's verification of any token (the reference for verify_contact_token)."""
        if len(token) > 1024:
            raise InvalidLink("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidLink("malformed token") from exc
        secret = self._keys.get(kid) if isinstance(kid := header.get("kid"), str) else None
        if secret is None:
            raise InvalidLink("unknown key")
        return self._decode_with_pyjwt(token, secret, now)

    @staticmethod
    def _decode_with_pyjwt(token: str, secret: bytes, now: float | None) -> ContactClaims:
        """PyJWT's verification with one key: HS256 only, its signature, then our claims."""
        try:
            claims = jwt.decode(
                token, secret, algorithms=["HS256"],
                options={"require": ["s", "c"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidLink("signature or claims refused") from exc
        return _accept(claims.get("s"), claims.get("c"), claims.get("exp"), claims.get("iat"), now,
                       claims.get("g", 1))

    @staticmethod
    def _link_mac(mac: _Hmac, public_id: str) -> str:
        return _b64(mac.digest(_LINK_DOMAIN + public_id.encode())[:_MAC_BYTES])

    def created_link_token(self, public_id: str) -> str:
        """`<kid>.<public_id>.<mac>` for a created link's survey_url."""
        return f"{self._kid}.{public_id}.{self._link_mac(self._mac_of, public_id)}"

    def created_link_tokens(self, public_ids: Sequence[str]) -> list[str]:
        """created_link_token of each public id, with the per-token work cut to the minimum (a batch's links)."""
        inner, outer = self._mac_of.inner.copy, self._mac_of.outer.copy
        to_b64, alphabet, prefix = binascii.b2a_base64, _URLSAFE, f"{self._kid}."
        tokens: list[str] = []
        append = tokens.append
        for public_id in public_ids:
            digest = inner()
            digest.update(_LINK_DOMAIN + public_id.encode())
            mac = outer()
            mac.update(digest.digest())
            code = to_b64(mac.digest()[:_MAC_BYTES], newline=False).translate(alphabet).rstrip(b"=").decode("ascii")
            append(f"{prefix}{public_id}.{code}")
        return tokens

    def verify_created_link(self, token: str) -> str:
        """The public id of a created-link token, or InvalidLink."""
        parts = token.split(".")
        if len(parts) != 3 or len(token) > 256:
            raise InvalidLink("malformed link")
        kid, public_id, mac = parts
        key_mac = self._macs.get(kid)
        if key_mac is None or not hmac.compare_digest(self._link_mac(key_mac, public_id), mac):
            raise InvalidLink("signature refused")
        return public_id
