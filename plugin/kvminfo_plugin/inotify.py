"""inotify(7) through the C library: inotify_init1, inotify_add_watch,
inotify_rm_watch, and the event records read from the descriptor.

Written here instead of using inotify-simple, which imports ctypes.util (and
with it tempfile, shutil, random, bz2 and lzma: ~1.1 MiB of the device plugin's
RSS, bench/bench_footprint.py) only to find libc by name; the functions are
already in the process (``ctypes.CDLL(None)``). The descriptor is non-blocking:
the caller waits for it with poll(2) and ``read()`` returns what is queued.

Masks are those of <linux/inotify.h>; tests/test_plugin_inotify.py checks them
against the header.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import NamedTuple


class flags:  # noqa: N801 - read as inotify.flags.CREATE, like the IN_CREATE it stands for
    """IN_* event and watch bits (linux/inotify.h)."""

    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    ISDIR = 0x40000000


class Event(NamedTuple):
    wd: int  # the watch descriptor add_watch returned; -1 for Q_OVERFLOW
    mask: int
    cookie: int  # pairs MOVED_FROM with MOVED_TO
    name: str  # the entry inside a watched directory; "" for the directory itself


_HEADER = struct.Struct("iIII")  # struct inotify_event: int wd; uint32 mask, cookie, len; char name[len]
_READ_SIZE = 64 * 1024
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class INotify:
    """One inotify instance (close-on-exec, non-blocking)."""

    def __init__(self) -> None:
        self._fd = _check(_libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK), "inotify_init1")

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def add_watch(self, path: str, mask: int) -> int:
        """The watch descriptor; OSError (errno ENOENT, ENOTDIR, EACCES, ENOSPC...) if the kernel refuses."""
        return _check(_libc.inotify_add_watch(self._fd, os.fsencode(path), ctypes.c_uint32(mask)), "inotify_add_watch")

    def rm_watch(self, wd: int) -> None:
        _check(_libc.inotify_rm_watch(self._fd, wd), "inotify_rm_watch")

    def read(self) -> list[Event]:
        """Every event queued now (none: an empty list; never blocks)."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return events
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = os.fsdecode(data[offset:offset + length].rstrip(b"\0"))
                offset += length
                events.append(Event(wd, mask, cookie, name))
