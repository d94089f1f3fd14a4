"""Watch device nodes and report health changes within a second.

inotify on each node's directory wakes the checker at once (devtmpfs and
tmpfs both deliver CREATE/DELETE/ATTRIB); a slow poll catches what inotify
cannot show (a driver unloaded behind an unchanged node, a directory that did
not exist at start).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from kvminfo_plugin.dirwatch import DirectoryWatcher
from kvminfo_plugin.inventory import PathHealth, check_path

log = logging.getLogger(__name__)

OnChange = Callable[[PathHealth], None]


class HealthMonitor:
    """Checks ``paths`` (path -> permissions) on every inotify event and every
    ``poll_interval_s``; calls ``on_change`` for each path whose health flipped."""

    def __init__(self, paths: dict[str, str], on_change: OnChange, poll_interval_s: float) -> None:
        self._paths = dict(paths)
        self._on_change = on_change
        self._poll_interval_s = poll_interval_s
        self._names = {os.path.basename(p) for p in self._paths}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.current: dict[str, PathHealth] = {p: check_path(p, perm) for p, perm in self._paths.items()}
        self._watcher = DirectoryWatcher(sorted({os.path.dirname(p) for p in self._paths}), self._on_event, "health-inotify")
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> HealthMonitor:
        self._watcher.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():  # stop() also runs when start-up failed before start()
            self._thread.join()
        self._watcher.stop()

    def _on_event(self, _directory: str, name: str, _mask: int) -> None:
        # Name-less events (the directory itself went away) concern every path in it.
        if not name or name in self._names:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._poll_interval_s)
            self._wake.clear()
            if not self._stopping.is_set():
                self.check_all()

    def check_all(self) -> None:
        for path, permissions in self._paths.items():
            now = check_path(path, permissions)
            if now.healthy != self.current[path].healthy:
                self.current[path] = now
                self._on_change(now)
