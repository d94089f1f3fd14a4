"""A thread that reports inotify events in a few directories.

Used twice: for the device nodes' directories (health) and for the plugin
directory (kubelet restarts). inotify-simple is a thin, maintained wrapper of
the syscalls (inotify_init1, inotify_add_watch, inotify_rm_watch and the event
records), so no C extension and no polling library is needed.

A watch dies with its directory. So a directory that is missing (at start, or
because it was removed) is waited for by watching its nearest existing
ancestor; when it appears the watch moves back to it, and the caller gets a
name-less event, because entries may have been created before the new watch.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from inotify_simple import INotify, flags

from kvminfo.common.threads import ReadableWorker

log = logging.getLogger(__name__)

# Everything that can make a node or socket appear, vanish or change access.
WATCH_MASK = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF
# The watched directory itself went away: its watch is dead (IGNORED) or points elsewhere (MOVE_SELF).
_WATCH_LOST = flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED
# A directory came or went inside a watched one: a missing directory may now exist.
_DIR_CHANGED = flags.CREATE | flags.MOVED_TO | flags.DELETE | flags.MOVED_FROM



class Change(enum.Enum):
    """What happened to an entry (or, for RESCAN, to the directory itself)."""

    APPEARED = "appeared"  # IN_CREATE, IN_MOVED_TO
    VANISHED = "vanished"  # IN_DELETE, IN_MOVED_FROM
    CHANGED = "changed"  # IN_ATTRIB (mode, owner, link count); IN_CLOSE_WRITE where asked for
    RESCAN = "rescan"  # the directory itself changed, went away or came back: anything in it may have


@dataclass(frozen=True, slots=True)
class DirEvent:
    directory: str  # one of the directories asked for
    name: str  # the entry; "" for RESCAN
    change: Change


OnEvent = Callable[[DirEvent], None]


def classify(name: str, mask: int) -> Change:
    """An inotify event (inotify(7)) as the one change a caller acts on; an event
    on the watched directory itself (no name) is a RESCAN."""
    if not name:
        return Change.RESCAN
    if mask & (flags.CREATE | flags.MOVED_TO):
        return Change.APPEARED
    if mask & (flags.DELETE | flags.MOVED_FROM):
        return Change.VANISHED
    if mask & (flags.ATTRIB | flags.CLOSE_WRITE):
        return Change.CHANGED
    return Change.RESCAN


class DirectoryWatcher:
    """Calls ``on_event(DirEvent)`` from its own thread.

    The thread sleeps in poll(2) on the inotify descriptor and an eventfd, with
    no timeout: it runs only when an event comes, and ``stop()`` (a write to the
    eventfd) ends it at once. An idle node pays no wakeups for it.
    """

    def __init__(self, directories: list[str], on_event: OnEvent, name: str, contents: bool = False) -> None:
        """``contents``: also report files written in place (IN_CLOSE_WRITE). Off by
        default: device nodes (/dev/kvm) and the kubelet's checkpoint are written often."""
        self._inotify = INotify()
        self._mask = WATCH_MASK | (flags.CLOSE_WRITE if contents else 0)
        self._wanted = list(dict.fromkeys(directories))
        self._wanted_set = set(self._wanted)
        self._path_of: dict[int, str] = {}  # watch descriptor -> a wanted directory or a stand-in ancestor
        self._sync()
        self._on_event = on_event
        self._worker = ReadableWorker(name, self._inotify.fileno(), self._read_events)

    def start(self) -> DirectoryWatcher:
        self._worker.start()
        return self

    def stop(self) -> None:
        self._worker.stop()
        self._inotify.close()

    def _read_events(self) -> None:
        for event in self._inotify.read(timeout=0):  # what is queued now; never blocks
            path = self._path_of.get(event.wd)
            if path is None:
                continue  # a watch already dropped (its IGNORED comes after DELETE_SELF)
            if path in self._wanted_set:
                self._notify(DirEvent(path, event.name, classify(event.name, event.mask)))
            if event.mask & _WATCH_LOST:
                self._drop(event.wd)
            if event.mask & _WATCH_LOST or (event.mask & flags.ISDIR and event.mask & _DIR_CHANGED):
                for directory in self._sync():
                    log.info("%s is back; watching it again", directory)
                    self._notify(DirEvent(directory, "", Change.RESCAN))  # entries made before the watch

    def _notify(self, event: DirEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a bug in a callback must not kill the watch
            log.exception("inotify callback failed for %s/%s", event.directory, event.name)

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
            # A directory made between our failed try on it and the watch on its parent
            # sent its CREATE before that watch existed: look again one level down, as
            # often as the path has levels.
            for _ in range(len(PurePosixPath(directory).parts)):
                at = self._watch_nearest(directory, watched, needed)
                if at is None:
                    break
                if at == directory:
                    added.append(directory)
                    break
                below = PurePosixPath(directory).parts[:len(PurePosixPath(at).parts) + 1]
                if not os.path.isdir(os.path.join(*below)):
                    break  # not there yet: the watch on ``at`` will see it come
        for wd, path in list(self._path_of.items()):
            if path not in needed:
                self._drop(wd)
        return added

    def _watch_nearest(self, directory: str, watched: set[str], needed: set[str]) -> str | None:
        """Watch ``directory`` or else its nearest existing ancestor; the path watched, or
        None when the kernel refused for another reason than a missing path."""
        for candidate in (directory, *map(str, PurePosixPath(directory).parents)):
            try:
                self._path_of[self._inotify.add_watch(candidate, self._mask)] = candidate
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue
                log.warning("cannot watch %s (%s); relying on the slow poll", candidate, err.strerror)
                return None
            needed.add(candidate)
            if candidate != directory and candidate not in watched:
                log.info("%s does not exist; watching %s until it appears", directory, candidate)
            return candidate
        return None

    def _drop(self, wd: int) -> None:
        del self._path_of[wd]
        try:
            self._inotify.rm_watch(wd)
        except OSError:
            pass  # the kernel already removed it (directory deleted)
