"""Small filesystem helpers shared by the writers (feature file, CDI spec, sockets)."""

from __future__ import annotations

import os


def unlink_if_exists(path: str | os.PathLike[str]) -> bool:
    """Remove ``path`` (a symlink itself, never its target); True if something was removed.

    Only a missing path is quiet; any other OSError (EACCES, EISDIR, ...) is raised.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
