"""Human durations on the command line: "90s", "10m", "1h", "1h30m", "2d"."""

from __future__ import annotations

import re

from kvminfo.errors import ParseError

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# Units in decreasing order, each at most once (Go's time.ParseDuration order).
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
# Every duration ends up in datetime arithmetic or threading.Event.wait, which
# overflow far beyond this; no refresh interval or expiry needs more than a year.
MAX_DURATION_S = 365 * 86400


class DurationError(ParseError):
    """Not a duration, or out of bounds; the message names the option."""


def parse_duration(text: str, option: str = "duration") -> int:
    """Seconds in ``text``; ``option`` names the culprit in the error message."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise DurationError(f"{option}: {text!r} is not a duration; use e.g. 90s, 10m, 1h, 1h30m")
    # A number longer than the bound's own digits is past it anyway; checking the
    # length first also keeps int() away from Python's 4300-digit limit.
    numbers = [n for n in match.groups() if n]
    if any(len(n.lstrip("0")) > len(str(MAX_DURATION_S)) for n in numbers):
        seconds = MAX_DURATION_S + 1
    else:
        seconds = sum(int(n) * s for n, s in zip(match.groups(), _UNIT_SECONDS.values(), strict=True) if n)
    if seconds <= 0:
        raise DurationError(f"{option}: {text!r} must be longer than zero")
    if seconds > MAX_DURATION_S:
        shown = text.strip() if len(text.strip()) <= 40 else text.strip()[:20] + "..."
        raise DurationError(f"{option}: {shown!r} is too long; at most {format_duration(MAX_DURATION_S)}")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse for log lines: 5400 -> "1h30m"."""
    rest, parts = int(round(seconds)), []
    for unit, size in _UNIT_SECONDS.items():
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"
