"""verify_contact_token's own checks answer exactly what PyJWT's verification answers."""

from __future__ import annotations

import random
import string
import time
from typing import Any

import jwt
import pytest

from service.core.signing import ExpiredLink, InvalidLink, LinkSigner
from service.settings import SigningKey

# 64 bytes: long enough for the HS384 tokens of the generator too
KEYS = (SigningKey("k2", b"new-signing-secret-".ljust(64, b"n")),
        SigningKey("k1", b"old-signing-secret-".ljust(64, b"o")))
SIGNER = LinkSigner(KEYS)
NOW = time.time()
B64 = string.ascii_letters + string.digits + "-_"
UNKNOWN_KEY = SigningKey("k9", b"unknown-key-secret-".ljust(64, b"u"))


def outcome(verify, token: str):
    try:
        return verify(token, NOW)
    except (InvalidLink, ExpiredLink) as exc:
        return type(exc).__name__


def _encoded(rng: random.Random) -> str:
    """Tokens PyJWT makes, with claims and headers we never issue."""
    key = rng.choice([*KEYS, UNKNOWN_KEY])
    claims: dict[str, Any] = rng.choice([
        {"s": 1, "c": 2}, {"s": 1, "c": 2, "exp": int(NOW) + 60}, {"s": 1, "c": 2, "exp": int(NOW) - 1},
        {"s": 1, "c": 2, "iat": int(NOW) + 3600}, {"s": 1, "c": 2, "iat": int(NOW)}, {"s": 1, "c": 2, "nbf": NOW + 99},
        {"s": 1, "c": 2, "aud": "x"}, {"s": 1, "c": "2"}, {"s": 1.0, "c": 2}, {"s": 1}, {"c": 2, "s": 1},
        {"s": -1, "c": 2}, {"s": 10**30, "c": 2}, {"s": 1, "c": 2, "sub": 5}, {"s": 1, "c": 2, "exp": 1.5},
        {"s": 1, "c": 2, "jti": 3}, {"s": None, "c": 2},
    ])
    # {"kid": kid, "typ": None} is our exact header ({"alg":"HS256","kid":...}, sorted, no typ)
    headers: dict[str, Any] = rng.choice([{"kid": key.kid}, {"kid": key.kid, "typ": "JWT"},
                                          {"kid": key.kid, "cty": "x"}, {}, {"kid": key.kid, "typ": None},
                                          {"kid": key.kid, "typ": None}])
    algorithm = rng.choice(["HS256", "HS256", "HS384"])
    # now and then signed with another key than the one the header names: a wrong MAC under that header
    secret = rng.choice([*KEYS, UNKNOWN_KEY]).secret if rng.random() < 0.25 else key.secret
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)


def _issued(rng: random.Random) -> str:
    signer = LinkSigner(rng.choice([KEYS, KEYS[1:]]))  # tokens of the current and of the previous key
    exp = rng.choice([None, int(NOW) + 3600, int(NOW) - 5, 0])
    return signer.contact_token(rng.randint(0, 10**6), rng.randint(0, 10**12), exp)


def _mutated(rng: random.Random, token: str) -> str:
    i = rng.randrange(len(token))
    return rng.choice([
        lambda: token[:i] + rng.choice(B64) + token[i + 1:],
        lambda: token[:i] + token[i + 1:],
        lambda: token[:i] + "." + token[i:],
        lambda: token + rng.choice(["=", "==", "A", ".", "!"]),
        lambda: token[:i],
        lambda: token.swapcase(),
        lambda: token[:i] + "é" + token[i:],
        lambda: ".".join(reversed(token.split("."))),
    ])()


@pytest.mark.parametrize("seed", range(6))
def test_same_answer_as_pyjwt_on_generated_tokens(seed):
    rng = random.Random(seed)
    fast_accepted = fast_refused = fast_pyjwt_made = 0
    for _ in range(1500):
        make = rng.choice([_issued, _encoded])
        token = make(rng)
        if rng.random() < 0.6:
            token = _mutated(rng, token)
        answer = outcome(SIGNER.verify_contact_token, token)
        assert answer == outcome(SIGNER._verify_with_pyjwt, token), token
        if _takes_the_fast_path(token):
            fast_pyjwt_made += make is _encoded
            if answer == "InvalidLink":
                fast_refused += 1
            else:
                fast_accepted += 1
    # otherwise the loop would mostly compare _verify_with_pyjwt with itself: many tokens carry
    # one of our own headers, both with the right MAC (or an expired one) and with a wrong one,
    # PyJWT's tokens (other claims, other keys' MACs) among them
    assert fast_accepted >= 250, fast_accepted
    assert fast_refused >= 150, fast_refused
    assert fast_pyjwt_made >= 40, fast_pyjwt_made


def _takes_the_fast_path(token: str) -> bool:
    """Whether verify_contact_token checks the MAC itself: a header segment byte for byte one we issue."""
    head, dot, _ = token.rpartition(".")[0].partition(".")
    return token.isascii() and len(token) <= 1024 and bool(dot) and head in SIGNER._by_header


def test_forgeries_never_reach_pyjwt_and_acceptance_is_pyjwts(monkeypatch):
    token = SIGNER.contact_token(12, 34, int(NOW) + 60)
    asked = []
    import jwt

    real = jwt.decode
    def counted(*a, **kw):
        asked.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(jwt, "decode", counted)
    assert SIGNER.verify_contact_token(token, NOW).contact_id == 34
    assert len(asked) == 1  # PyJWT's decode is the verifier of what is accepted
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{sig[:-3]}{'A' if sig[-3] != 'A' else 'B'}{sig[-2:]}"
    with pytest.raises(InvalidLink):
        SIGNER.verify_contact_token(forged, NOW)
    assert len(asked) == 1  # a forged MAC under our own header is refused before PyJWT
    with pytest.raises(ExpiredLink):
        SIGNER.verify_contact_token(SIGNER.contact_token(1, 2, int(NOW) - 1), NOW)


@pytest.mark.parametrize("suffix", ["", "=", "==", "A", "A=", "."])
def test_padding_of_the_signature_as_pyjwt(suffix):
    token = SIGNER.contact_token(5, 6, None) + suffix
    assert outcome(SIGNER.verify_contact_token, token) == outcome(SIGNER._verify_with_pyjwt, token)
