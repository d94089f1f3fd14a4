"""kvminfo/common/durations.py: the bounds every duration option (features-file, publish) shares."""

from __future__ import annotations

import pytest

from kvminfo.common.durations import MAX_DURATION_S, DurationError, format_duration, parse_duration


def test_the_bound_itself_is_accepted() -> None:
    assert parse_duration(format_duration(MAX_DURATION_S), "--interval") == MAX_DURATION_S
    assert parse_duration("365d") == 365 * 86400


# Past the bound these overflowed: datetime + timedelta (features-file --expiry),
# threading.Event.wait (--interval in features-file and publish), or int() of 5000 digits.
@pytest.mark.parametrize("text", ["366d", "99999999999d", "8761h", "525601m", "99999999999999999999s",
                                  "9" * 5000 + "s"])
def test_longer_than_the_bound_names_option_and_value(text: str) -> None:
    with pytest.raises(DurationError) as raised:
        parse_duration(text, "--interval")
    message = str(raised.value)
    assert message.startswith("--interval: ") and "at most 365d" in message
    assert len(message) < 200 and "\n" not in message  # a 5000-digit value is shortened, not echoed
