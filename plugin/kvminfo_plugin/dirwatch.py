"""A thread that reports inotify events in a few directories.

Used twice: for the device nodes' directories (health) and for the plugin
directory (kubelet restarts). inotify-simple is a thin, maintained wrapper of
the syscalls, so no C extension and no polling library is needed.

A watch dies with its directory. So a directory that is missing (at start, or
because it was removed) is waited for by watching its nearest existing
ancestor; when it appears the watch moves back to it, and the caller gets a
name-less event, because entries may have been created before the new watch.
"""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import PurePosixPath
from typing import Callable

from inotify_simple import INotify, flags

log = logging.getLogger(__name__)

# Everything that can make a node or socket appear, vanish or change access.
WATCH_MASK = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF
# The watched directory itself went away: its watch is dead (IGNORED) or points elsewhere (MOVE_SELF).
_WATCH_LOST = flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED
# A directory came or went inside a watched one: a missing directory may now exist.
_DIR_CHANGED = flags.CREATE | flags.MOVED_TO | flags.DELETE | flags.MOVED_FROM

OnEvent = Callable[[str, str, int], None]  # (directory, name, mask); name "" = the directory itself


class DirectoryWatcher:
    """Calls ``on_event(directory, name, mask)`` from its own thread.

    ``stop()`` returns within one read timeout.
    """

    READ_TIMEOUT_MS = 100

    def __init__(self, directories: list[str], on_event: OnEvent, name: str) -> None:
        self._inotify = INotify()
        self._wanted = list(dict.fromkeys(directories))
        self._path_of: dict[int, str] = {}  # watch descriptor -> a wanted directory or a stand-in ancestor
        self._sync()
        self._on_event = on_event
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def watching(self) -> list[str]:
        """The wanted directories watched right now (the others are waited for)."""
        watched = set(self._path_of.values())
        return [d for d in self._wanted if d in watched]

    def start(self) -> DirectoryWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._inotify.close()

    def _run(self) -> None:
        wanted = set(self._wanted)
        while not self._stopping.is_set():
            for event in self._inotify.read(timeout=self.READ_TIMEOUT_MS):
                path = self._path_of.get(event.wd)
                if path is None:
                    continue  # a watch already dropped (its IGNORED comes after DELETE_SELF)
                if path in wanted:
                    self._notify(path, event.name, event.mask)
                if event.mask & _WATCH_LOST:
                    self._drop(event.wd)
                if event.mask & _WATCH_LOST or (event.mask & flags.ISDIR and event.mask & _DIR_CHANGED):
                    for directory in self._sync():
                        log.info("%s is back; watching it again", directory)
                        self._notify(directory, "", 0)  # entries made before the watch: check now

    def _notify(self, directory: str, name: str, mask: int) -> None:
        try:
            self._on_event(directory, name, mask)
        except Exception:  # a bug in a callback must not kill the watch
            log.exception("inotify callback failed for %s/%s", directory, name)

    def _sync(self) -> list[str]:
        """Watch each wanted directory, or else its nearest existing ancestor; drop watches
        no longer needed. Returns the wanted directories that were not watched before."""
        watched = set(self._path_of.values())
        needed: set[str] = set()
        added = []
        for directory in self._wanted:
            if directory in watched:
                needed.add(directory)
                continue
            for candidate in (directory, *map(str, PurePosixPath(directory).parents)):
                try:
                    self._path_of[self._inotify.add_watch(candidate, WATCH_MASK)] = candidate
                except OSError as err:
                    if err.errno in (errno.ENOENT, errno.ENOTDIR):
                        continue
                    log.warning("cannot watch %s (%s); relying on the slow poll", candidate, err.strerror)
                    break
                needed.add(candidate)
                if candidate == directory:
                    added.append(directory)
                elif candidate not in watched:
                    log.info("%s does not exist; watching %s until it appears", directory, candidate)
                break
        for wd, path in list(self._path_of.items()):
            if path not in needed:
                self._drop(wd)
        return added

    def _drop(self, wd: int) -> None:
        del self._path_of[wd]
        try:
            self._inotify.rm_watch(wd)
        except OSError:
            pass  # the kernel already removed it (directory deleted)
