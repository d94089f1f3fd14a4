"""Replace a file atomically, so that a reader (NFD's fsnotify watcher, the
kubelet reading a CDI spec) sees either the old content or the new, never half.

The temp file is a dotfile in the target's own directory: os.replace is only
atomic within one filesystem, and NFD skips dotfiles, so it never reads the
temp file itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kvminfo.common.errors import KvminfoError
from kvminfo.common.fsutil import unlink_if_exists


def temp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp.{os.getpid()}")


# lstat's file types other than a regular file, as an operator would name them.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def refuse_unless_regular(path: str | os.PathLike[str], what: str = "") -> None:
    """Raise KvminfoError when ``path`` exists and is not a regular file.

    A rename replaces whatever directory entry has the name: over /dev/null or
    /dev/kvm it would leave a plain file where the device node was (every later
    open gets the file, not the device), over a FIFO or socket it cuts off the
    reader, over a symlink it replaces the link, not its target. We only ever
    replace regular files (ours). lstat, so a symlink is refused, never
    followed. Missing is fine (first write); other lstat errors are left to the
    write itself to report. ``what`` prefixes the message (e.g. "--output ").
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), f"file type {stat.S_IFMT(mode):o}")
    raise KvminfoError(f"{what}{path}: is {kind}, not a regular file; refusing to replace it")


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename + directory fsync.

    Any failure removes the temp file and raises KvminfoError naming the path.
    An existing ``path`` that is not a regular file (device node, FIFO, socket,
    symlink, directory) is refused before anything is written
    (refuse_unless_regular).
    """
    target = Path(path)
    refuse_unless_regular(target)
    temp = temp_path_for(target)
    try:
        fd = _create_temp(temp, mode)
    except OSError as err:
        raise KvminfoError(f"{target}: cannot write: {_reason(err, temp)}") from None
    try:
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException as err:
        unlink_if_exists(temp)
        if isinstance(err, OSError):
            raise KvminfoError(f"{target}: cannot write: {_reason(err, temp)}") from None
        raise
    _fsync_directory(target.parent)


def _create_temp(temp: Path, mode: int) -> int:
    """A new file at ``temp``, never an existing one and never through a symlink.

    O_EXCL refuses anything already there (a symlink planted at the temp name
    included: O_CREAT|O_EXCL does not follow it, O_NOFOLLOW says so twice). What
    is there is a writer's leftover (killed mid-write; in a container the next
    writer has the same pid) or a plant: unlink it, which removes a symlink
    itself, never its target, and try once more.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(temp, flags, mode)
    except FileExistsError:
        unlink_if_exists(temp)
        return os.open(temp, flags, mode)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable across a crash."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # the data is in place; durability of the rename is best effort
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(err: OSError, temp: Path) -> str:
    if not temp.parent.is_dir():
        return f"directory {temp.parent} does not exist"
    return err.strerror or str(err)
