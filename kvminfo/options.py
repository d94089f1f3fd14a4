"""The probe options on the command line (argparse): `probe`, `labels`, `features-file`, `publish`.

ProbeOptions itself, its defaults and options_for_families live in
kvminfo.probe_options, which the NFD hook's light entry point (kvminfo.hook)
uses without argparse.
"""

from __future__ import annotations

import argparse

from kvminfo.features.hyperv_tables import parse_version
from kvminfo.labels import DEFAULT_FAMILIES, FAMILIES
from kvminfo.probe_options import (
    DEFAULT_KVM_PATH,
    DEFAULT_LIBVIRT_DEADLINE_S,
    DEFAULT_LIBVIRT_URI,
    LIBVIRT_DEADLINE_EXAMPLES,
    MAX_LIBVIRT_DEADLINE_S,
    ProbeOptions,
)


def libvirt_deadline(text: str) -> float:
    """argparse type for --libvirt-timeout: a duration (kvminfo.durations: "10", "2.5s",
    "1m"), above zero, at most an hour. Imported here: the NFD hook path without
    --libvirt-timeout never loads kvminfo.durations."""
    from kvminfo.durations import DurationError, format_duration, parse_duration

    try:
        return float(parse_duration(text, "--libvirt-timeout", maximum_s=MAX_LIBVIRT_DEADLINE_S))
    except DurationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration greater than 0 and at most {MAX_LIBVIRT_DEADLINE_S:g} s "
            f"({format_duration(MAX_LIBVIRT_DEADLINE_S)}); {LIBVIRT_DEADLINE_EXAMPLES}") from None


def libvirt_version(text: str) -> str:
    """argparse type for --libvirt-version: libvirt's release form MAJOR.MINOR.MICRO."""
    version = parse_version(text)
    if version is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a libvirt version such as 9.0.0")
    return ".".join(map(str, version))


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The source-selection options every label-producing command accepts."""
    g = parser.add_argument_group("sources")
    g.add_argument("--kvm-device", default=DEFAULT_KVM_PATH, metavar="PATH",
                   help="KVM device to probe (default: %(default)s)")
    g.add_argument("--no-kvm", action="store_true", help="do not probe the KVM device")
    # A replay stands in for libvirt: with --no-libvirt it would be silently ignored.
    libvirt_or_replay = g.add_mutually_exclusive_group()
    libvirt_or_replay.add_argument("--no-libvirt", action="store_true",
                                   help="do not ask libvirt (the fast path NFD hooks use); not with --domcaps-xml")
    g.add_argument("--libvirt-uri", default=DEFAULT_LIBVIRT_URI, metavar="URI",
                   help="libvirt connection URI (default: %(default)s)")
    g.add_argument("--libvirt-timeout", type=libvirt_deadline, default=DEFAULT_LIBVIRT_DEADLINE_S, metavar="DURATION",
                   help="give up on libvirt after this long (seconds, or e.g. 2.5s, 1m; more than 0, at most "
                        f"{MAX_LIBVIRT_DEADLINE_S / 3600:g}h); the other sources still report "
                        "(default: %(default)gs)")
    libvirt_or_replay.add_argument("--domcaps-xml", metavar="FILE",
                                   help="replay a recorded `virsh domcapabilities` output instead of asking libvirt "
                                        "(at most 4 MiB)")
    g.add_argument("--hostcaps-xml", metavar="FILE",
                   help="with --domcaps-xml: replay a recorded `virsh capabilities` output too (TSC counter, "
                        "machine types); without it a replay has no tsc or machine-types labels")
    g.add_argument("--cpu-baseline-xml", metavar="FILE",
                   help="with --domcaps-xml: replay a recorded `virsh hypervisor-cpu-baseline --features` output "
                        "over its host-model (the cpu-features family); without it a replay has no cpu-features")
    g.add_argument("--libvirt-version", type=libvirt_version, metavar="X.Y.Z",
                   help="with --domcaps-xml: the libvirt release that wrote the file (`virsh version`), so that "
                        "its silence about a Hyper-V name it knows means unsupported; without it, silence "
                        "speaks only for libvirt 9.0.0's names (a live libvirt reports its own version)")
    g.add_argument("--whitelist-config", metavar="FILE",
                   help="kernel whitelist JSON (kvm-version-info): enables kvm-info-version-* labels")
    parser.add_argument("--family", action="append", choices=(*FAMILIES, "all"), metavar="FAMILY",
                        help=f"label family to produce ({', '.join(FAMILIES)}, or all); repeatable; default: "
                             f"{', '.join(DEFAULT_FAMILIES)}. Sources no chosen family needs are not probed")
    parser.add_argument("--obsolete-cpu-models", metavar="FILE",
                        help="CPU models never to label (names separated by commas, blanks or lines; '#' comments); "
                             "the file replaces the default list, as KubeVirt's obsoleteCPUModels does (list the "
                             "defaults too to keep them); default: KubeVirt's DefaultObsoleteCPUModels "
                             "(486, pentium*, qemu64, kvm64, ...)")
    parser.add_argument("--kubevirt-names", action="store_true",
                        help="use KubeVirt's label names hyperv.node.kubevirt.io/<name> instead of "
                             "kvm-info-cap-hyperv-<name>; only for nodes where KubeVirt's own node labeller does not "
                             "run (it owns that namespace and deletes labels it did not set; see docs/labels.md)")


def probe_options_from_args(args: argparse.Namespace) -> ProbeOptions:
    if args.libvirt_version is not None and args.domcaps_xml is None:
        from kvminfo.errors import KvminfoError

        raise KvminfoError("--libvirt-version describes a --domcaps-xml replay; a live libvirt reports its own")
    for given, option in ((args.hostcaps_xml, "--hostcaps-xml"), (args.cpu_baseline_xml, "--cpu-baseline-xml")):
        if given is not None and args.domcaps_xml is None:
            from kvminfo.errors import KvminfoError

            raise KvminfoError(f"{option} replays with --domcaps-xml; a live libvirt is asked for it")
    return ProbeOptions(
        kvm_path=args.kvm_device,
        use_kvm=not args.no_kvm,
        use_libvirt=not args.no_libvirt,
        libvirt_uri=args.libvirt_uri,
        libvirt_deadline_s=args.libvirt_timeout,
        domcaps_xml=args.domcaps_xml,
        replay_libvirt_version=args.libvirt_version,
        hostcaps_xml=args.hostcaps_xml,
        cpu_baseline_xml=args.cpu_baseline_xml,
        whitelist_config=args.whitelist_config,
        kubevirt_names=args.kubevirt_names,
        families=families_from_args(args),
        obsolete_cpu_models=_obsolete_list(args.obsolete_cpu_models),
    )


def families_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """--family (repeatable, "all" = every family) in FAMILIES order; the default set without it."""
    chosen = getattr(args, "family", None)
    if not chosen:
        return DEFAULT_FAMILIES
    return FAMILIES if "all" in chosen else tuple(f for f in FAMILIES if f in chosen)


def _obsolete_list(path: str | None) -> frozenset[str] | None:
    if path is None:
        return None
    from kvminfo.features.cpu_models import parse_obsolete_list
    from kvminfo.sources.operator_file import read_operator_file

    return parse_obsolete_list(read_operator_file(path, "obsolete CPU model list"))


