"""The Output seam: where a Report's labels go (stdout lines, an NFD feature
file, a NodeFeature object), and the one rule for "what changed".

An output is an object with ``target`` (named in log lines) and ``write``;
kvminfo.output.periodic runs any of them once or every interval.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from kvminfo.labels.lines import describe_label_diff, format_label_lines

if TYPE_CHECKING:
    import threading
    from collections.abc import Mapping
    from typing import Protocol

    from kvminfo.model import Report

    class Output(Protocol):
        @property
        def target(self) -> str:
            """What is written, for log lines: "/etc/.../features.d/kvminfo", "ns/kvminfo-node"."""

        def write(self, report: Report, one_shot: bool, stop: threading.Event) -> bool:
            """Bring the target up to date with ``report`` (writing only what changed, unless
            ``one_shot``). False when ``stop`` was set before the target was current.
            Raises KvminfoError when the target cannot be written (one line naming it)."""


def labels_changed(old: Mapping[str, str] | None, new: Mapping[str, str], target: str) -> str | None:
    """Why a target now holding ``old`` labels (None: no target yet) must be written
    to hold ``new``: "no <target> yet", "labels changed (+added; -removed; ~changed)",
    or None when the labels are the same. Every output asks this one question first."""
    if old is None:
        return f"no {target} yet"
    if dict(old) != dict(new):
        return f"labels changed ({describe_label_diff(old, new)})"
    return None


class StdoutLines:
    """NFD's hook format on stdout: key=value lines, sorted (`kvminfo labels`, the NFD hooks)."""

    target = "stdout"

    def write(self, report: Report, one_shot: bool = True, stop: threading.Event | None = None) -> bool:
        sys.stdout.write(format_label_lines(dict(report.labels)))
        return True
