"""Every source kvminfo knows, in report order: adding a source is its module plus one line here.

A line names the source, the module holding its ``SOURCE`` object (imported
only when the source is enabled, so the NFD hook path with --no-libvirt never
loads the libvirt module, xml or libvirt-python), when it is enabled, and what
`kvminfo probe` says when it is not. ``enabled`` lives here rather than on the
Source so that deciding costs no import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvminfo.sources.facts import KERNEL_WHITELIST, KVM, LIBVIRT

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvminfo.model import ProbeOptions
    from kvminfo.sources.base import Source


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One registry line."""

    name: str
    module: str  # a module with a module-level SOURCE (kvminfo.sources.base.Source)
    enabled: Callable[[ProbeOptions], bool]
    off_reason: str  # the DISABLED result's reason, e.g. the option that switched it off

    def load(self) -> Source:
        source: Source = importlib.import_module(self.module).SOURCE
        if source.name != self.name:
            raise RuntimeError(f"{self.module}.SOURCE is named {source.name!r}, registered as {self.name!r}")
        return source


def _kvm(options: ProbeOptions) -> bool:
    return options.use_kvm


def _libvirt(options: ProbeOptions) -> bool:
    return options.use_libvirt


def _kernel_whitelist(options: ProbeOptions) -> bool:
    return bool(options.whitelist_config)


SOURCES: tuple[SourceEntry, ...] = (
    SourceEntry(KVM, "kvminfo.sources.kvm", _kvm, "--no-kvm"),
    SourceEntry(LIBVIRT, "kvminfo.sources.libvirt", _libvirt, "--no-libvirt"),
    SourceEntry(KERNEL_WHITELIST, "kvminfo.sources.kernel_whitelist", _kernel_whitelist, "no --whitelist-config"),
)


def entry(name: str) -> SourceEntry:
    """The registered source called ``name``; KeyError names the known ones."""
    for registered in SOURCES:
        if registered.name == name:
            return registered
    raise KeyError(f"no source {name!r}; registered: {', '.join(e.name for e in SOURCES)}")
