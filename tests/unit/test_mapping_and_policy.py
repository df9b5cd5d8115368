"""Canonical metadata mappings and rate-limit policy parsing."""

from __future__ import annotations

import hashlib

import pytest

from service.core.mapping import canonical_mapping, mapping_hash
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
