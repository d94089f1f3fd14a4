"""A source added the documented way, for tests/test_sources_registry.py: this module plus one
registry line. It reads the running kernel's release from procfs (proc(5):
/proc/sys/kernel/osrelease, the same string uname(2) returns as `release`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kvminfo.model import ProbeOptions, SourceResult, Status
from kvminfo.sources.base import LocalSource

NAME = "kernel-release"
OSRELEASE = "/proc/sys/kernel/osrelease"
LABEL = "feature.node.kubernetes.io/kvm-info-test-kernel-release"  # fully qualified, like every kvminfo key


@dataclass(frozen=True)
class KernelReleaseFacts:
    release: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class KernelReleaseSource(LocalSource):
    name = NAME

    def probe(self, options: ProbeOptions) -> SourceResult:
        try:
            with open(OSRELEASE, encoding="ascii") as f:
                release = f.read().strip()
        except OSError as err:
            return SourceResult(NAME, Status.UNAVAILABLE, f"{OSRELEASE}: {err.strerror}")
        return SourceResult(NAME, Status.OK, "", KernelReleaseFacts(release))

    def summary(self, result: SourceResult) -> str:
        assert isinstance(result.facts, KernelReleaseFacts)
        return f"kernel {result.facts.release}"

    def attributes(self, result: SourceResult) -> dict[str, object]:
        assert isinstance(result.facts, KernelReleaseFacts)
        return {"release": result.facts.release}

    def labels(self, result: SourceResult) -> dict[str, str]:
        assert isinstance(result.facts, KernelReleaseFacts)
        return {LABEL: result.facts.release}


SOURCE = KernelReleaseSource()
