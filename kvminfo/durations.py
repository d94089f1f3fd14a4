"""Human durations on the command line: "90s", "10m", "1h", "1h30m", "2d"."""

from __future__ import annotations

import re

from kvminfo.errors import KvminfoError

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# Units in decreasing order, each at most once (Go's time.ParseDuration order).
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str, option: str = "duration") -> int:
    """Seconds in ``text``; ``option`` names the culprit in the error message."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise KvminfoError(f"{option}: {text!r} is not a duration; use e.g. 90s, 10m, 1h, 1h30m")
    seconds = sum(int(n) * s for n, s in zip(match.groups(), _UNIT_SECONDS.values()) if n)
    if seconds <= 0:
        raise KvminfoError(f"{option}: {text!r} must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse for log lines: 5400 -> "1h30m"."""
    rest, parts = int(round(seconds)), []
    for unit, size in _UNIT_SECONDS.items():
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"
