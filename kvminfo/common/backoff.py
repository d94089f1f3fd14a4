"""Pure: the API writer's retry backoff (1 s, 2 s, 4 s ... capped at 60 s), never a tight loop.

Light on purpose: `kvminfo publish` bounds --retries with it before importing `kubernetes`.
"""

from __future__ import annotations

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


def backoff_delay_s(retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1-based)."""
    return min(FIRST_BACKOFF_S * float(2 ** min(retry - 1, 32)), MAX_BACKOFF_S)


def backoff_total_s(retries: int) -> float:
    """The longest ``retries`` retries can wait in one round."""
    return sum(backoff_delay_s(retry) for retry in range(1, retries + 1))
