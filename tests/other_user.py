"""Run the product as another uid from any checkout, however closed its parent directories are.

A clone under /root (mode 0700), or in a ``mktemp -d`` directory (0700), cannot
be traversed by uid 65534 or a pod's uid 65532: exec of ``.venv/bin/kvminfo``
fails with EACCES before the product runs. The same holds for an interpreter
under pyenv in /root. So a test that runs kvminfo as another uid does it in a
private mount namespace (``unshare --mount --propagation private``, root
only) where each closed ancestor directory of the checkout and of the
interpreter is covered with a 0755 tmpfs into which only the entries on the
way are bind-mounted back. Paths stay the same (the venv's shebangs and the
editable install's finder hold absolute paths), nothing outside the namespace
changes, and the checkout's own files keep their modes.

The checkout's own files must be readable by others (a clone made with umask
022, git's usual); one made with umask 077 is reported, not worked around.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KVMINFO = REPO / ".venv" / "bin" / "kvminfo"


def needed_paths() -> tuple[Path, ...]:
    """What another uid must reach to run kvminfo: the checkout (venv inside) and the base interpreter."""
    return (REPO, Path(os.path.realpath(sys.executable)))


def closed_ancestors(paths: Iterable[Path]) -> list[tuple[Path, list[str]]]:
    """Every ancestor directory of ``paths`` that others cannot search (no o+x), top-down,
    with the entries below it that lie on the way to one of the paths."""
    plan: dict[Path, set[str]] = {}
    for path in paths:
        path = Path(os.path.realpath(path))
        for parent in reversed(path.parents):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                plan.setdefault(parent, set()).add(path.relative_to(parent).parts[0])
    return [(d, sorted(plan[d])) for d in sorted(plan, key=lambda d: len(d.parts))]


def reach_script(paths: Iterable[Path] | None = None) -> str:
    """Shell commands (each ending in ``&& ``) that, run as root inside a private
    mount namespace, let any uid reach ``paths`` (default: :func:`needed_paths`).
    Empty when nothing is closed."""
    commands: list[str] = []
    for directory, entries in closed_ancestors(needed_paths() if paths is None else paths):
        d = shlex.quote(str(directory))
        holds = [f"h{i}" for i in range(len(entries))]
        is_dir = [os.path.isdir(directory / entry) for entry in entries]
        for hold, entry, dir_ in zip(holds, entries, is_dir, strict=True):
            # --rbind: mounts below the entry (a checkout on its own mount) come along
            commands.append(f"{hold}=$(mktemp{' -d' if dir_ else ''}) && "
                            f"mount --rbind {d}/{shlex.quote(entry)} ${hold}")
        commands.append(f"mount -t tmpfs -o mode=0755 kvminfo-test {d}")
        for hold, entry, dir_ in zip(holds, entries, is_dir, strict=True):
            target = f"{d}/{shlex.quote(entry)}"
            commands.append(f"{'mkdir' if dir_ else 'touch'} {target} && mount --rbind ${hold} {target} && "
                            f"umount -R ${hold} && rm -d ${hold}")
    return "".join(f"{c} && " for c in commands)


def unreadable_checkout() -> str | None:
    """Why another uid cannot use this checkout even with its parents opened, or None."""
    for path in (REPO, REPO / ".venv", REPO / ".venv" / "bin", KVMINFO, REPO / "kvminfo" / "__init__.py"):
        mode = os.stat(path).st_mode
        want = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) or path == KVMINFO else 0)
        if mode & want != want:
            return (f"{path} is mode {stat.S_IMODE(mode):04o}: other users cannot read the checkout "
                    "(cloned with umask 077?); clone with umask 022 to run the tests that run kvminfo as another uid")
    return None


def as_user(uid: int, gid: int, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` as ``uid``:``gid`` (no supplementary groups,
    no capabilities gained) with the checkout and interpreter reachable. Root only."""
    script = reach_script() + 'g=$1 && shift && exec setpriv --reuid="$0" --regid="$g" --clear-groups -- "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(uid), str(gid), *argv]
