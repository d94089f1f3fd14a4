"""The host CPU's feature set as KubeVirt's node labeller computes it: libvirt's hypervisor CPU
baseline of the host-model, with every feature expanded. Pure (XML text in, names out) but for
the flag and version rules that kvminfo.sources.libvirt applies when it asks.

KubeVirt (cmd/virt-launcher/node-labeller/node-labeller.sh at d923fdb, PR #17947) runs
``virsh domcapabilities [--expand-cpu-features] [--supported-cpu-features] |
virsh hypervisor-cpu-baseline --features /dev/stdin`` on x86_64 and s390x only, and
pkg/virt-handler/node-labeller/cpu_plugin.go loadHostSupportedFeatures labels
``cpu-feature.node.kubevirt.io/<name>`` for each ``<feature>`` of the answer whose policy is
``require`` (s390x.go requirePolicy: also an absent policy on s390x, where libvirt writes none);
``disable`` features (in the model, not on this host) are dropped.

virsh turns the domain capabilities' ``<mode name='host-model' supported='yes'>`` into the
``<cpu>`` it passes to virConnectBaselineHypervisorCPU by renaming the element and dropping its
attributes (tools/virsh-host.c vshExtractCPUDefXMLs); host_model_cpu_xml does the same.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kvminfo.common.errors import ParseError

# Architectures whose libvirt CPU driver has a hypervisor baseline (KubeVirt: amd64.go and s390x.go
# hasHostSupportedFeatures; node-labeller.sh: "hypervisor-cpu-baseline command only works on x86
# and s390x").
BASELINE_ARCHES = frozenset({"x86_64", "s390x"})

# virConnectGetDomainCapabilitiesFlags (include/libvirt/libvirt-domain.h) and the libvirt release
# that first accepts each: the driver refuses a flag it does not know (virCheckFlags), so each is
# passed only to a libvirt at least that new, as KubeVirt passes the virsh option only when
# `virsh domcapabilities --help` offers it.
EXPAND_CPU_FEATURES = 1 << 1  # "Report all host model CPU features. (Since: 12.2.0)"
SUPPORTED_CPU_FEATURES = 1 << 2  # "Report all CPU features supported on the host ... (Since: 12.5.0)"
DOMCAPS_FLAG_SINCE: tuple[tuple[int, tuple[int, int, int]], ...] = (
    (EXPAND_CPU_FEATURES, (12, 2, 0)), (SUPPORTED_CPU_FEATURES, (12, 5, 0)))
# virConnectBaselineCPUFlags VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES (virsh --features), since 1.2.14.
BASELINE_EXPAND_FEATURES = 1 << 0
# virConnectBaselineHypervisorCPU exists since libvirt 4.4.0.
BASELINE_HYPERVISOR_SINCE = (4, 4, 0)


class BaselineError(ParseError):
    """Not a CPU definition; the message names where it came from."""


def domcaps_flags(version: tuple[int, int, int] | None, wanted: int) -> int:
    """The ``wanted`` flags a libvirt of ``version`` accepts (none when the version is unknown)."""
    if version is None:
        return 0
    return sum(flag for flag, since in DOMCAPS_FLAG_SINCE if wanted & flag and version >= since)


def label_flags(version: tuple[int, int, int] | None) -> int:
    """Flags for the domain capabilities the labels read: KubeVirt's virsh_domcapabilities.xml
    (--expand-cpu-features, so host-model-requires lists every feature the host model enables)."""
    return domcaps_flags(version, EXPAND_CPU_FEATURES)


def baseline_input_flags(version: tuple[int, int, int] | None) -> int:
    """Flags for the domain capabilities piped into the baseline: both, as KubeVirt passes them."""
    return domcaps_flags(version, EXPAND_CPU_FEATURES | SUPPORTED_CPU_FEATURES)


def host_model_cpu_xml(domcaps_xml: str) -> str | None:
    """The ``<cpu>`` virsh would extract from domain capabilities; None without a supported host-model."""
    mode = ET.fromstring(domcaps_xml).find("cpu/mode[@name='host-model'][@supported='yes']")
    if mode is None:
        return None
    mode.tag = "cpu"
    mode.attrib.clear()
    mode.tail = None
    return ET.tostring(mode, encoding="unicode")


def baseline_features(cpu_xml: str, arch: str | None, source: str = "CPU baseline") -> tuple[str, ...]:
    """Names of the baseline's features KubeVirt labels, in document order, each once."""
    try:
        root = ET.fromstring(cpu_xml)
    except ET.ParseError as err:
        raise BaselineError(f"{source}: not valid CPU XML: {err}") from None
    if root.tag != "cpu":
        raise BaselineError(f"{source}: not valid CPU XML: root element is <{root.tag}>, expected <cpu> "
                            "(the output of `virsh hypervisor-cpu-baseline --features`)")
    names: dict[str, None] = {}
    for feature in root.findall("feature"):
        policy, name = feature.get("policy"), (feature.get("name") or "").strip()
        if name and (policy == "require" or (policy is None and arch == "s390x")):
            names[name] = None
    return tuple(names)
