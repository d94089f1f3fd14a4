"""Pure: capped exponential backoff (first, 2 x first, 4 x first ... at most max), never a tight loop.

The API writer (`kvminfo publish`: 1 s doubling to 60 s) counts its retries and asks
backoff_delay_s; a loop that keeps its own state (the device plugin's registration) holds
a Backoff and asks it for the next delay, resetting it after a success.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


def backoff_delay_s(retry: int, first_s: float = FIRST_BACKOFF_S, max_s: float = MAX_BACKOFF_S) -> float:
    """Seconds to wait before retry number ``retry`` (1-based): ``first_s`` doubled per retry, at most ``max_s``."""
    return min(first_s * float(2 ** min(retry - 1, 32)), max_s)


def backoff_total_s(retries: int, first_s: float = FIRST_BACKOFF_S, max_s: float = MAX_BACKOFF_S) -> float:
    """The longest ``retries`` retries can wait in one round."""
    return sum(backoff_delay_s(retry, first_s, max_s) for retry in range(1, retries + 1))


@dataclass
class Backoff:
    """The delays of one repeating operation: next_delay_s() gives first_s, 2 x first_s, ...
    (at most max_s); reset() after a success starts again from first_s."""

    first_s: float = FIRST_BACKOFF_S
    max_s: float = MAX_BACKOFF_S
    retries: int = 0

    def next_delay_s(self) -> float:
        self.retries += 1
        return backoff_delay_s(self.retries, self.first_s, self.max_s)

    def reset(self) -> None:
        self.retries = 0
