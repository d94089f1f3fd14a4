"""Uninstall: remove the host files kvminfo's labellers leave on a node, and only
those (deploy/cleanup runs this with the labellers' own paths).

The writers keep their files on SIGTERM on purpose (a restarting labeller must
not drop the node's labels), so an uninstall removes them in a separate step,
as `kvminfo-device-plugin --remove-cdi-specs` does for the plugin's CDI specs:
- a feature file is kvminfo's when its first line is kvminfo's header
  (featurefile.HEADER_MARK, whatever the version);
- the NFD relay hook is kvminfo's when one of its first lines carries
  RELAY_HOOK_MARKER (deploy/nfd/hooks/relay-hook.sh); its data directory
  (<hook>.d) goes too once it is empty.
Anything else stays where it is, with one line saying why. One line per path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kvminfo.common.errors import KvminfoError
from kvminfo.common.fsutil import remove_for_uninstall
from kvminfo.output.featurefile import HEADER_MARK

RELAY_HOOK_MARKER = "kvminfo-hook-relay: this hook is kvminfo's"  # a comment line of relay-hook.sh
_HEAD_BYTES = 512


def _head(path: Path) -> str | None:
    """The first bytes of a regular file (never following a symlink), None when absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if os.path.islink(path):
            return ""  # a symlink: never ours (the writers rename regular files into place)
        raise KvminfoError(f"{path}: cannot read: {err.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, _HEAD_BYTES).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def remove_feature_file(path: Path) -> str:
    """Delete ``path`` if kvminfo features-file wrote it."""
    head = _head(path)
    if head is None:
        return f"{path}: not present"
    if not head.startswith(HEADER_MARK):
        return f"{path}: left in place: not written by kvminfo (no '{HEADER_MARK.strip()}' header)"
    return remove_for_uninstall(path)


def remove_relay_hook(hook: Path) -> list[str]:
    """Delete kvminfo's relay hook script and its data directory (<hook>.d) once that is empty."""
    head = _head(hook)
    if head is None:
        lines = [f"{hook}: not present"]
    elif not any(RELAY_HOOK_MARKER in line for line in head.splitlines()[:5]):
        lines = [f"{hook}: left in place: not kvminfo's relay hook (no '{RELAY_HOOK_MARKER}' line)"]
    else:
        lines = [remove_for_uninstall(hook)]
    data = hook.with_name(hook.name + ".d")
    try:
        data.rmdir()
        lines.append(f"{data}: removed")
    except FileNotFoundError:
        pass
    except OSError as err:
        lines.append(f"{data}: left in place: {(err.strerror or str(err)).lower()}")
    return lines
