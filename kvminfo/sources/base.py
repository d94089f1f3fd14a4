"""The Source seam: what every source provides to collect() and the outputs.

A source is a module under kvminfo/sources/ with a module-level ``SOURCE``
object satisfying the ``Source`` protocol, plus one line in
kvminfo/sources/registry.py saying when it is enabled. ``probe`` may block
(an ioctl, a libvirt call in C): the runner (kvminfo.sources.runner) gives it a
thread and stops waiting at ``deadline_s``; ``probe`` itself never needs a
thread or a timer of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvminfo.model import SourceResult

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Protocol

    from kvminfo.model import ProbeOptions

    class Source(Protocol):
        """One place facts come from (a device, a daemon, a file)."""

        @property
        def name(self) -> str:
            """Stable name ("kvm"): probe output, NodeFeature attribute set kvminfo.<name>."""

        def describe(self, options: ProbeOptions) -> str:
            """What is asked, for messages: "kvm", "libvirt at qemu:///system"."""

        def deadline_s(self, options: ProbeOptions) -> float:
            """The longest collect() waits for ``probe``; then the source is reported as timed out."""

        def probe(self, options: ProbeOptions) -> SourceResult:
            """Look once. Facts or a non-OK status with a one-line reason; raises KvminfoError
            (or a ParseError) only for the operator's own input (a file named on the command line)."""

        def summary(self, result: SourceResult) -> str:
            """One line of the facts an operator looks at first (`kvminfo probe`), for an OK result."""

        def attributes(self, result: SourceResult) -> Mapping[str, object] | None:
            """NFD attributes (kvminfo.<name> in the NodeFeature) for an OK result; None: none."""

        def labels(self, result: SourceResult) -> Mapping[str, str]:
            """Labels this source makes on its own from an OK result (validated like every label).
            Labels that need several sources' evidence come from kvminfo/labels/ instead."""

# Local sources (a device, a file) answer in milliseconds; this only guards a wedged kernel.
LOCAL_SOURCE_DEADLINE_S = 5.0


class LocalSource:
    """Defaults for a source that only reads this host: the local deadline, no
    summary, no NodeFeature attributes, no labels of its own."""

    name = ""

    def describe(self, options: ProbeOptions) -> str:
        return self.name

    def deadline_s(self, options: ProbeOptions) -> float:
        return LOCAL_SOURCE_DEADLINE_S

    def summary(self, result: SourceResult) -> str:
        return ""

    def attributes(self, result: SourceResult) -> Mapping[str, object] | None:
        return None

    def labels(self, result: SourceResult) -> Mapping[str, str]:
        return {}
