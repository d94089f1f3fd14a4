"""Small filesystem helpers shared by the writers (feature file, CDI spec, sockets)."""

from __future__ import annotations

import os

from kvminfo.common.errors import KvminfoError


def unlink_if_exists(path: str | os.PathLike[str]) -> bool:
    """Remove ``path`` (a symlink itself, never its target); True if something was removed.

    Only a missing path is quiet; any other OSError (EACCES, EISDIR, ...) is raised.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def remove_for_uninstall(path: str | os.PathLike[str]) -> str:
    """An uninstall step's removal of a file already known to be ours: one line saying what
    happened ("P: removed" or "P: not present"); a failure is one KvminfoError line."""
    try:
        removed = unlink_if_exists(path)
    except OSError as err:
        raise KvminfoError(f"{path}: cannot remove: {err.strerror}") from None
    return f"{path}: removed" if removed else f"{path}: not present"
