"""core/count_forms.py: which form a segment's count takes, from the last timing of each."""

from __future__ import annotations

from service.core.count_forms import TRY_HOPS_SECONDS, CountForms

KEY = ("{o:x}:seg:s", "digest")


def test_numbered_until_it_is_slow_then_the_faster_of_the_two():
    forms = CountForms()
    assert forms.hops(KEY) is False  # never counted: the default
    forms.took(KEY, False, TRY_HOPS_SECONDS - 0.01)
    assert forms.hops(KEY) is False  # fast enough
    forms.took(KEY, False, TRY_HOPS_SECONDS + 0.5)
    assert forms.hops(KEY) is True  # slow: the hops are tried
    forms.took(KEY, True, TRY_HOPS_SECONDS + 0.2)
    assert forms.hops(KEY) is True  # and were faster
    forms.took(KEY, True, TRY_HOPS_SECONDS + 0.9)
    assert forms.hops(KEY) is False  # slower than the last numbered count now
    forms.took(KEY, False, 0.01)
    assert forms.hops(KEY) is False


def test_the_oldest_segments_are_forgotten_first():
    forms = CountForms(remembered=2)
    for name in ("a", "b", "c"):
        forms.took((name, "d"), False, 1.0)
    forms.took(("b", "d"), True, 0.5)  # b used again: the newest
    forms.took(("e", "d"), False, 1.0)
    assert list(forms.timings) == [("b", "d"), ("e", "d")]
    assert forms.hops(("a", "d")) is False  # forgotten: the default again
