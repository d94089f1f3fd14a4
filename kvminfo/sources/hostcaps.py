"""Parse libvirt's host capabilities (`virsh capabilities`, virConnectGetCapabilities) into raw facts.

Pure: text in, HostCapabilities (kvminfo/sources/libvirt_facts.py) out; I/O lives in kvminfo.sources.libvirt. A document that is
not host capabilities raises HostcapsError; the caller decides whose fault that is (the
operator's replay file, or a libvirt answering garbage). Meaning of each element
(libvirt docs/formatcaps.rst; ../shared/corpus/hostcaps/README.md):

- ``<host><cpu><arch>``: the host's architecture.
- ``<host><cpu><counter name='tsc' frequency='HZ' scaling='yes|no'/>``: written only when the
  host TSC is invariant (src/cpu/cpu_x86.c virCPUx86GetHost), so its absence from an answer
  means "no stable TSC frequency", not "frequency unknown".
- ``<guest>`` per OS type and guest architecture: ``<os_type>hvm</os_type>``, ``<arch name=...>``
  with ``<machine [canonical=...] [deprecated='yes']>NAME</machine>`` entries and one
  ``<domain type='qemu|kvm|...'>`` per accelerator; a ``<domain>`` with its own ``<emulator>``
  may list its own ``<machine>`` entries, which then replace the arch's for that accelerator.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kvminfo.common.errors import ParseError
from kvminfo.sources.domcaps_families import host_tsc_counter
from kvminfo.sources.libvirt_facts import HostCapabilities

ROOT_TAG = "capabilities"


class HostcapsError(ParseError):
    """Not a host capabilities document; the message names where it came from."""


def _names(nodes: list[ET.Element]) -> list[str]:
    return [text for text in ((n.text or "").strip() for n in nodes) if text]


def kvm_machine_types(root: ET.Element, host_arch: str | None) -> tuple[str, ...]:
    """Machine types of the KVM accelerator for guests of ``host_arch`` (every hvm guest when the
    host's arch is unknown).

    KubeVirt's virt-handler (cmd/virt-handler/virt-handler.go getMachines) labels every
    ``<guest><arch><machine>`` of every guest, TCG-only emulators of other architectures included;
    a KVM VM can only use the host's architecture with a ``<domain type='kvm'>``, so only those
    count here (on x86_64 hosts the i686 guest lists the same names).
    """
    names: dict[str, None] = {}
    for guest in root.findall("guest"):
        arch = guest.find("arch")
        if guest.findtext("os_type", "").strip() != "hvm" or arch is None:
            continue
        if host_arch is not None and arch.get("name") != host_arch:
            continue
        kvm = arch.find("domain[@type='kvm']")
        if kvm is None:
            continue
        own = kvm.findall("machine")
        names.update(dict.fromkeys(_names(own if own else arch.findall("machine"))))
    return tuple(names)


def parse_hostcaps(xml_text: str, source: str = "host capabilities") -> HostCapabilities:
    """Facts from one host capabilities document; ``source`` names where it came from."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise HostcapsError(f"{source}: not valid host capabilities XML: {err}") from None
    if root.tag != ROOT_TAG:
        raise HostcapsError(f"{source}: not valid host capabilities XML: root element is <{root.tag}>, "
                            f"expected <{ROOT_TAG}>")
    arch = (root.findtext("host/cpu/arch") or "").strip() or None
    return HostCapabilities(arch=arch, tsc_counter=host_tsc_counter(xml_text),
                            machine_types=kvm_machine_types(root, arch))
