"""kvminfo/common/backoff.py: capped doubling for both packages (publish's 1 s -> 60 s, the
device plugin's registration 0.1 s -> 5 s). Expected values: the doubling written out."""

from __future__ import annotations

from kvminfo.common.backoff import Backoff, backoff_delay_s, backoff_total_s


def test_other_first_and_cap():
    assert [backoff_delay_s(retry, 0.1, 5.0) for retry in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff_total_s(3, 0.5, 1.0) == 0.5 + 1.0 + 1.0


def test_backoff_state_doubles_and_resets():
    backoff = Backoff(first_s=1.0, max_s=5.0)
    assert [backoff.next_delay_s() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay_s() == 1.0
