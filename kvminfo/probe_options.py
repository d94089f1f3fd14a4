"""What to probe (ProbeOptions), shared by `probe`, `labels`, `features-file`, `publish` and the hooks.

Kept apart from the command line (kvminfo.options, argparse) and from logging so
that the NFD hook's entry point (kvminfo.hook) builds its options without
importing either: both cost milliseconds of a hook that NFD starts every minute.
"""

from __future__ import annotations

import os

from kvminfo.labels import DEFAULT_FAMILIES, FAMILIES, FAMILY_SOURCES
from kvminfo.lazylog import get_logger
from kvminfo.record import record, replace
from kvminfo.sources.facts import KERNEL_WHITELIST, KVM, LIBVIRT

DEFAULT_KVM_PATH = "/dev/kvm"
DEFAULT_LIBVIRT_URI = "qemu:///system"
# The first domcapabilities call on a host probes QEMU (~4 s); later ones ~25 ms.
DEFAULT_LIBVIRT_DEADLINE_S = 10.0
# Thread.join overflows on inf/1e308 and takes nan or -1 as "do not wait"; an
# hour already outlasts any libvirt that is going to answer at all.
MAX_LIBVIRT_DEADLINE_S = 3600.0
# Examples in --libvirt-timeout's messages: each within (0, MAX_LIBVIRT_DEADLINE_S] (tests check).
LIBVIRT_DEADLINE_EXAMPLES = "e.g. 30 (seconds), 2.5s, 10m, 1h"
# Where kvm-version-info-nfd-plugin read its config; used when no --whitelist-config is given.
DEFAULT_WHITELIST_CONFIG = "/etc/kubernetes/node-feature-discovery/source.d/conf/kvm-version-info.json"

log = get_logger(__name__)


@record
class ProbeOptions:
    kvm_path: str = DEFAULT_KVM_PATH
    use_kvm: bool = True
    use_libvirt: bool = True
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    libvirt_deadline_s: float = DEFAULT_LIBVIRT_DEADLINE_S
    domcaps_xml: str | None = None  # replay a recorded `virsh domcapabilities`
    replay_libvirt_version: str | None = None  # "X.Y.Z" of the libvirt that wrote domcaps_xml
    hostcaps_xml: str | None = None  # with domcaps_xml: replay a recorded `virsh capabilities`
    cpu_baseline_xml: str | None = None  # with domcaps_xml: replay `virsh hypervisor-cpu-baseline --features`
    whitelist_config: str | None = None  # kernel whitelist (kvm-version-info) JSON
    kubevirt_names: bool = False  # hyperv.node.kubevirt.io/<name> instead of kvm-info-cap-hyperv-<name>
    families: tuple[str, ...] = DEFAULT_FAMILIES  # label families to render (kvminfo/labels/__init__.py)
    obsolete_cpu_models: frozenset[str] | None = None  # --obsolete-cpu-models; None: KubeVirt's default list
    # Sources switched off by options_for_families because no chosen family needs them
    # (not by --no-kvm / --no-libvirt): `probe` says so instead of naming a flag nobody gave.
    unneeded_sources: frozenset[str] = frozenset()


def options_for_families(options: ProbeOptions, families: list[str] | tuple[str, ...] | None = None,
                         default_whitelist: str = DEFAULT_WHITELIST_CONFIG) -> ProbeOptions:
    """Render ``families`` (default: options.families) and switch off the sources none of them uses
    (kvminfo.labels.FAMILY_SOURCES)."""
    families = tuple(f for f in FAMILIES if f in (options.families if families is None else families))
    options = replace(options, families=families)
    needed = {source for family in families for source in FAMILY_SOURCES[family]}
    unneeded = set(options.unneeded_sources)
    if KVM not in needed and options.use_kvm:
        options = replace(options, use_kvm=False)
        unneeded.add(KVM)
    if LIBVIRT not in needed and options.use_libvirt:
        options = replace(options, use_libvirt=False)
        unneeded.add(LIBVIRT)
    if "version" not in families:
        if options.whitelist_config is not None:
            unneeded.add(KERNEL_WHITELIST)
        options = replace(options, whitelist_config=None)
    elif options.whitelist_config is None:
        if os.path.exists(default_whitelist):
            options = replace(options, whitelist_config=default_whitelist)
        elif set(families) == {"version"}:
            log.warning("no kernel whitelist: %s does not exist and no --whitelist-config was given; "
                        "no kvm-info-version labels", default_whitelist)
    return replace(options, unneeded_sources=frozenset(unneeded))
