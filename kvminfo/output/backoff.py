"""Pure: capped exponential retry backoff, never a tight loop: by default the API
writer's (1 s, 2 s, 4 s ... capped at 60 s); the device plugin's registration and
serving retries pass their own first delay and cap.

Light on purpose: `kvminfo publish` bounds --retries with it before importing `kubernetes`.
"""

from __future__ import annotations

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


def backoff_delay_s(retry: int, first_s: float = FIRST_BACKOFF_S, max_s: float = MAX_BACKOFF_S) -> float:
    """Seconds to wait before retry number ``retry`` (1-based): ``first_s`` doubling up to ``max_s``."""
    return min(first_s * float(2 ** min(retry - 1, 32)), max_s)


def backoff_total_s(retries: int) -> float:
    """The longest ``retries`` retries can wait in one round."""
    return sum(backoff_delay_s(retry) for retry in range(1, retries + 1))
