"""Background threads, started and stopped one way (the labeller's source runner, the plugin's watchers)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def start_daemon(name: str, target: Callable[..., Any], *args: Any) -> threading.Thread:
    """Start ``target(*args)`` in a daemon thread: one that is hung (in a C call that
    never returns) must never keep the process from exiting."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def stop_thread(thread: threading.Thread | None, stop: threading.Event | None = None,
                timeout_s: float | None = None) -> bool:
    """Set ``stop`` (when given), then wait for ``thread`` up to ``timeout_s`` (None: for ever).

    A thread never started, or the calling thread itself, is not waited for.
    Returns True when the thread is gone.
    """
    if stop is not None:
        stop.set()
    if thread is None or thread.ident is None:
        return True
    if thread is not threading.current_thread():
        thread.join(timeout_s)
    return not thread.is_alive()
