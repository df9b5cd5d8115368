"""The link generation of contact tokens: claim `g`, absent in the first generation (tokens byte for
byte as before), verified as PyJWT verifies; and the one rule every kind of contact link answers by."""

from __future__ import annotations

import jwt
import pytest

from service.core.errors import Gone
from service.core.revocation import REVOKED, check_generation, generation_revoked
from service.core.signing import InvalidLink, LinkSigner
from tests.conftest import TEST_KEYS

KEY = TEST_KEYS[0]
SIGNER = LinkSigner(TEST_KEYS)


def pyjwt(claims: dict) -> str:
    return jwt.encode(claims, KEY.secret, "HS256", headers={"kid": KEY.kid, "typ": None})


@pytest.mark.parametrize("exp", [None, 1_900_000_000])
def test_tokens_are_pyjwts_and_the_first_generation_carries_no_claim(exp):
    tail = {} if exp is None else {"exp": exp}
    assert SIGNER.contact_token(7, 42, exp) == pyjwt({"s": 7, "c": 42, **tail})
    assert SIGNER.contact_token(7, 42, exp, 1) == pyjwt({"s": 7, "c": 42, **tail})
    assert SIGNER.contact_token(7, 42, exp, 2) == pyjwt({"s": 7, "c": 42, "g": 2, **tail})
    assert SIGNER.contact_tokens(7, [1, 2], exp, 3) == [pyjwt({"s": 7, "c": c, "g": 3, **tail}) for c in (1, 2)]
    assert SIGNER.contact_token_bytes(7, [5], exp, 2 ** 31 - 1) == [
        pyjwt({"s": 7, "c": 5, "g": 2 ** 31 - 1, **tail}).encode()]


@pytest.mark.parametrize("generation", [1, 2, 99])
def test_the_generation_is_read_back(generation):
    token = SIGNER.contact_token(7, 42, None, generation)
    claims = SIGNER.verify_contact_token(token)
    assert (claims.survey_seq, claims.contact_id, claims.generation) == (7, 42, generation)
    assert SIGNER.verify_contact_token(pyjwt({"s": 7, "c": 42})).generation == 1  # absent: the first


@pytest.mark.parametrize("bad", [0, -1, 2 ** 31, "2", 2.0, True, None, [2]])
def test_a_generation_that_is_no_generation_is_refused(bad):
    with pytest.raises(InvalidLink):
        SIGNER.verify_contact_token(pyjwt({"s": 7, "c": 42, "g": bad}))


def test_the_rule():
    assert [generation_revoked(token, 2) for token in (1, 2, 3)] == [True, False, False]
    check_generation(2, 2)
    with pytest.raises(Gone) as caught:
        check_generation(1, 2)
    assert caught.value.reason == REVOKED == "the link was revoked"
