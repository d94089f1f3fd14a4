"""The probe options on the command line (argparse) of `probe`, `labels`, `features-file` and
`publish` (and so of the NFD hooks, which run `kvminfo labels`), and the families they choose
(options_for_families).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from kvminfo.common.durations import DurationError, format_duration, parse_duration
from kvminfo.common.errors import KvminfoError
from kvminfo.common.logsetup import add_logging_arguments
from kvminfo.features.cpu_models import parse_obsolete_list
from kvminfo.features.hyperv_tables import parse_version
from kvminfo.labels import DEFAULT_FAMILIES, FAMILIES, FAMILY_SOURCES
from kvminfo.model import DEFAULT_KVM_PATH, DEFAULT_LIBVIRT_DEADLINE_S, DEFAULT_LIBVIRT_URI, ProbeOptions
from kvminfo.sources.facts import KERNEL_WHITELIST, KVM, LIBVIRT
from kvminfo.sources.operator_file import read_operator_file

# Thread.join overflows on inf/1e308 and takes nan or -1 as "do not wait"; an
# hour already outlasts any libvirt that is going to answer at all.
MAX_LIBVIRT_DEADLINE_S = 3600.0
# Examples in --libvirt-timeout's messages: each within (0, MAX_LIBVIRT_DEADLINE_S] (tests check).
LIBVIRT_DEADLINE_EXAMPLES = "e.g. 30 (seconds), 2.5s, 10m, 1h"
# Where kvm-version-info-nfd-plugin read its config; used when no --whitelist-config is given.
DEFAULT_WHITELIST_CONFIG = "/etc/kubernetes/node-feature-discovery/source.d/conf/kvm-version-info.json"

if TYPE_CHECKING:
    from kvminfo.output.loop_metrics import LoopMetrics

log = logging.getLogger(__name__)

# The metrics port of a looping labeller: off unless asked for (a one-shot run and the NFD
# hooks share these commands); deploy/ serves both labellers on METRICS_PORT_IN_DEPLOY.
METRICS_PORT_IN_DEPLOY = 9711
DEFAULT_METRICS_ADDRESS = "0.0.0.0"


def libvirt_deadline(text: str) -> float:
    """argparse type for --libvirt-timeout: a duration (kvminfo.common.durations: "10", "2.5s",
    "1m"), above zero, at most an hour."""
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


def port_number(text: str) -> int:
    """argparse type for --metrics-port: 0 (off) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535; 0: off)")
    return port


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """What every looping labeller (features-file, publish) takes besides its own options:
    the log options (kvminfo.common.logsetup) and the metrics endpoint."""
    add_logging_arguments(parser)
    g = parser.add_argument_group("metrics (with --interval)")
    g.add_argument("--metrics-port", type=port_number, default=0, metavar="N",
                   help="serve /metrics (Prometheus) and /healthz on this TCP port from start, while looping "
                        f"(default: 0, off; deploy/ uses {METRICS_PORT_IN_DEPLOY}). /healthz answers 200 while the "
                        "last round ended OK within 2 x (interval + probe deadline), else 503 with the reason")
    g.add_argument("--metrics-address", default=DEFAULT_METRICS_ADDRESS, metavar="ADDR",
                   help="address to listen on for --metrics-port (default: %(default)s, every IPv4 address)")


def check_loop_arguments(args: argparse.Namespace, interval_s: float | None) -> None:
    """Refuse metrics for a run that does not loop (before anything is probed)."""
    if args.metrics_port and interval_s is None:
        raise KvminfoError(f"--metrics-port {args.metrics_port} serves a looping run: give --interval too")


@contextlib.contextmanager
def loop_metrics(args: argparse.Namespace, interval_s: float | None, options: ProbeOptions) -> Iterator[LoopMetrics | None]:
    """The run's metrics, served on --metrics-port for as long as the block runs (None without it).
    The port is bound before the first round: a port in use is a one-line error at start."""
    check_loop_arguments(args, interval_s)
    if not args.metrics_port or interval_s is None:
        yield None
        return
    from kvminfo.collect import enabled_sources, probe_deadline_s
    from kvminfo.common.metrics_http import ADDRESS, BindError, MetricsServer
    from kvminfo.output.loop_metrics import LoopMetrics

    metrics = LoopMetrics(interval_s, probe_deadline_s(options), enabled_sources(options))
    try:
        server = MetricsServer(metrics.registry, metrics.health, args.metrics_address, args.metrics_port)
    except BindError as err:
        flag = "--metrics-address" if err.field == ADDRESS else "--metrics-port"
        raise KvminfoError(f"{flag}: {err.problem}") from None
    server.start()
    try:
        yield metrics
    finally:
        server.stop()


def probe_options_from_args(args: argparse.Namespace) -> ProbeOptions:
    if args.libvirt_version is not None and args.domcaps_xml is None:
        raise KvminfoError("--libvirt-version describes a --domcaps-xml replay; a live libvirt reports its own")
    for given, option in ((args.hostcaps_xml, "--hostcaps-xml"), (args.cpu_baseline_xml, "--cpu-baseline-xml")):
        if given is not None and args.domcaps_xml is None:
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
    return parse_obsolete_list(read_operator_file(path, "obsolete CPU model list"))


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
