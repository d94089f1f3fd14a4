"""Durations on the command line, one syntax for every time option.

A bare number is seconds ("60", "2.5"); otherwise numbers with units d, h, m,
s in that order, each at most once ("90s", "10m", "1h30m", "2d", "1.5h"),
as Go's time.ParseDuration reads them (without its ms/us/ns). Each option
then has its own bounds (parse_duration's minimum_s and maximum_s).
"""

from __future__ import annotations

import math
import re

from kvminfo.common.errors import ParseError

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER = r"\d+(?:\.\d+)?"
_BARE = re.compile(_NUMBER)
# Units in decreasing order, each at most once (Go's time.ParseDuration order).
_WITH_UNITS = re.compile("".join(f"(?:({_NUMBER}){unit})?" for unit in _UNIT_SECONDS))
# Every duration ends up in datetime arithmetic or threading.Event.wait, which
# overflow far beyond this; no refresh interval or expiry needs more than a year.
MAX_DURATION_S = 365 * 86400
EXAMPLES = "e.g. 60 (seconds), 90s, 10m, 1h30m, 2d"


class DurationError(ParseError):
    """Not a duration, or out of the option's bounds; the message names the option."""


def _shown(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 40 else text[:20] + "...")


def parse_duration(text: str, option: str = "duration", minimum_s: float = 0.0,
                   maximum_s: float = MAX_DURATION_S) -> float:
    """Seconds in ``text`` (an int when whole), above zero and within
    [``minimum_s``, ``maximum_s``]; ``option`` names the culprit in the message."""
    stripped = text.strip()
    bare = _BARE.fullmatch(stripped)
    with_units = None if bare else _WITH_UNITS.fullmatch(stripped)
    if not stripped or (bare is None and with_units is None):
        raise DurationError(f"{option}: {_shown(text)} is not a duration; {EXAMPLES}")
    numbers = [stripped] if bare else list(with_units.groups()) if with_units else []
    # A number longer than the bound's own digits is past it anyway; checking the
    # length first also keeps float()/int() away from huge inputs.
    if any(n and len(n.split(".")[0].lstrip("0")) > len(str(MAX_DURATION_S)) for n in numbers):
        seconds = math.inf
    elif bare:
        seconds = float(stripped)
    else:
        seconds = sum(float(n) * s for n, s in zip(numbers, _UNIT_SECONDS.values(), strict=True) if n)
    if seconds <= 0:
        raise DurationError(f"{option}: {_shown(text)} must be longer than zero")
    if seconds < minimum_s:
        raise DurationError(f"{option}: {_shown(text)} is too short; at least {format_duration(minimum_s)}")
    if seconds > maximum_s:
        raise DurationError(f"{option}: {_shown(text)} is too long; at most {format_duration(maximum_s)}")
    return int(seconds) if seconds == int(seconds) else seconds


def format_duration(seconds: float) -> str:
    """The inverse for messages and log lines: 5400 -> "1h30m", 2.5 -> "2.5s"."""
    whole = int(seconds)
    fraction = round(seconds - whole, 3) if seconds > whole else 0.0
    if fraction and whole < 60:
        return f"{whole + fraction:g}s"
    rest, parts = int(round(seconds)), []
    for unit, size in _UNIT_SECONDS.items():
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"
