"""Canonical metadata mappings and rate-limit policy parsing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from service.core.mapping import canonical_mapping, legacy_mapping_hash, mapping_hash
from service.core.ratepolicy import PolicyError, Window, parse_policy


def digest(pairs):
    return mapping_hash(canonical_mapping(pairs))


def test_order_and_number_forms_do_not_matter():
    assert digest([(1, "a"), (2, 3)]) == digest([(2, 3.0), (1, "a")])
    assert digest([(1, [1, 2.5, None])]) == digest([(1, [1.0, 2.5, None])])
    assert digest([]) == digest([])


def test_strings_types_and_list_order_matter():
    base = digest([(1, "a")])
    assert base != digest([(1, "A")])
    assert base != digest([(1, "a ")])
    assert digest([(1, 1)]) != digest([(1, "1")])
    assert digest([(1, [1, 2])]) != digest([(1, [2, 1])])
    assert digest([(1, None)]) != digest([])
    assert digest([(1, "x")]) != digest([(2, "x")])


def test_large_numbers_keep_their_float_form():
    assert canonical_mapping([(1, 1e20)]) == [(1, 1e20)]
    assert canonical_mapping([(1, 2.0)]) == [(1, 2)]


def test_integers_past_two_to_the_53_stay_exact():
    # 19-digit order numbers: distinct integers are distinct values, even where a double cannot tell them apart
    assert float(2**53 + 1) == float(2**53)
    assert digest([(1, 2**53 + 1)]) != digest([(1, 2**53)])
    assert digest([(1, 12345678901234567890)]) != digest([(1, 12345678901234567891)])
    assert canonical_mapping([(1, 9007199254740993)]) == [(1, 9007199254740993)]
    assert type(canonical_mapping([(1, 9007199254740993)])[0][1]) is int
    # an integral float is still the integer it equals, up to the 64 bits orjson writes
    assert digest([(1, 1e18)]) == digest([(1, 10**18)])
    assert canonical_mapping([(1, [2.0**63, -(2.0**63)])]) == [(1, [2**63, -(2**63)])]
    assert canonical_mapping([(1, 2.0**64)]) == [(1, 2.0**64)]  # past 64 bits: a double, as orjson reads it
    # the largest integer orjson writes, hashed in its exact form
    assert digest([(1, 2**64 - 1)]) == hashlib.sha256(b"[[1,18446744073709551615]]").digest()


def test_policy_parsing():
    policy = parse_policy(" 50/minute ; 5/second ")
    assert policy.windows == (Window(5, 1), Window(50, 60))
    assert policy.text == "5/second;50/minute"
    assert parse_policy("10/3s").windows == (Window(10, 3),)
    assert parse_policy("OFF").off
    assert parse_policy("1/hour").policy_header() == '"hour";q=1;w=3600'


@pytest.mark.parametrize("bad", ["", "5", "5/day", "0/second", "5/second;6/second", "x/minute", "5/0s"])
def test_bad_policies(bad):
    with pytest.raises(PolicyError):
        parse_policy(bad)


def test_the_hashed_form_is_pinned():
    # links already stored are found again by this hash: its input must never change form
    import hashlib

    canonical = canonical_mapping([(7, "b"), (2, 1.0), (5, [2.0, None, "x"]), (3, None)])
    assert canonical == [(2, 1), (3, None), (5, [2, None, "x"]), (7, "b")]
    assert mapping_hash(canonical) == hashlib.sha256(b'[[2,1],[3,null],[5,[2,null,"x"]],[7,"b"]]').digest()


def test_the_legacy_hash_is_the_rounded_form_links_were_stored_under():
    canonical = canonical_mapping([(2, [2**53 + 1, "x"]), (1, -(10**18)), (3, 5)])
    assert legacy_mapping_hash(canonical) == hashlib.sha256(
        b'[[1,-1e+18],[2,[9007199254740992.0,"x"]],[3,5]]').digest()
    assert legacy_mapping_hash(canonical_mapping([(1, 2**53 - 1), (2, "9007199254740993"), (3, 2.5)])) is None


def _normal_before(number):
    """normalize_number as it was before integers stayed exact (what stored links were hashed with)."""
    as_float = float(number)
    return int(as_float) if as_float.is_integer() and abs(as_float) < 2**53 else as_float


@pytest.mark.parametrize("seed", range(3))
def test_legacy_or_current_hash_is_the_hash_stored_before(seed):
    import random

    rng = random.Random(seed)
    for _ in range(3000):
        values: list[Any] = [rng.choice([rng.randint(-(2**63), 2**64 - 1), rng.randint(-10, 10),
                                         float(rng.randint(-2**62, 2**62)), rng.random() * 1e20, "x", None,
                                         [rng.randint(0, 2**63), "y"]])
                             for _ in range(rng.randint(1, 3))]
        pairs = [(mid, value) for mid, value in enumerate(values, 1)]
        before = sorted((mid, [_normal_before(v) if isinstance(v, int | float) else v for v in value]
                         if isinstance(value, list) else _normal_before(value) if isinstance(value, int | float)
                         else value) for mid, value in pairs)
        canonical = canonical_mapping(pairs)
        assert (legacy_mapping_hash(canonical) or mapping_hash(canonical)) == mapping_hash(before), pairs
