"""libvirt source: domain capabilities for virttype kvm (or a recorded replay).

libvirt can hang (a SIGSTOPped or wedged daemon still accepts the socket
connection, then never answers), and libvirt-python's calls block in C. The
runner (kvminfo.sources.runner) gives this source's probe its one thread and
its one deadline (--libvirt-timeout); the other sources still report.
``libvirt`` is imported lazily: the NFD hook path must never pay for it, and
this module is imported only when the source is enabled (registry.py).
"""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import TYPE_CHECKING

from kvminfo.common.errors import KvminfoError, one_line
from kvminfo.model import DEFAULT_LIBVIRT_URI, ProbeOptions, SourceResult, Status
from kvminfo.sources import cpu_baseline
from kvminfo.sources.domcaps import DomcapsError, parse_domcaps
from kvminfo.sources.facts import LIBVIRT
from kvminfo.sources.hostcaps import HostcapsError, parse_hostcaps
from kvminfo.sources.libvirt_embed import prepare_connection
from kvminfo.sources.libvirt_facts import HostCapabilities, LibvirtFacts
from kvminfo.sources.operator_file import read_operator_file
from kvminfo.sources.runner import run_source

if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger(__name__)


def probe_libvirt(uri: str, deadline_s: float, domcaps_xml: str | None = None,
                  replay_version: str | None = None) -> SourceResult:
    """Ask libvirt at ``uri`` (or replay the file ``domcaps_xml``) for its domain capabilities,
    giving up after ``deadline_s`` seconds (status timeout).

    A replay file is the operator's explicit input: unreadable, malformed or
    not KVM's answer raises KvminfoError. ``replay_version`` ("X.Y.Z", the
    libvirt that wrote the file) becomes libvirt_version; without it a replay
    has none. A live libvirt that is down, hung or answers garbage gives a
    non-OK SourceResult instead, so the other sources still count.
    """
    options = ProbeOptions(use_kvm=False, libvirt_uri=uri, libvirt_deadline_s=deadline_s, domcaps_xml=domcaps_xml,
                           replay_libvirt_version=replay_version)
    return run_source(SOURCE, options)


def replay_domcaps(path: str, libvirt_version: str | None = None) -> LibvirtFacts:
    """Facts from a recorded `virsh domcapabilities`; any problem with the file -> KvminfoError naming it.

    Only KVM's answer is accepted: `<domain>` names the virtualization type
    libvirt answered for (FACTS.md 2), and `qemu` (TCG), `hvf`, `bhyve`, `xen`
    describe another accelerator; a TCG file even repeats the KVM probe's
    <hyperv> list and has a TCG host model (FACTS.md 10), so replaying one would
    label KVM with another's word. ``libvirt_version`` ("X.Y.Z", --libvirt-version)
    is the libvirt that wrote the file, if the operator knows it.
    """
    text = read_operator_file(path, "domain capabilities")
    try:
        domcaps = parse_domcaps(text, source=path)
    except DomcapsError as err:
        raise KvminfoError(str(err)) from None
    if domcaps.domain_type != "kvm":
        what = f"<domain>{domcaps.domain_type}</domain>" if domcaps.domain_type else "no <domain> element"
        raise KvminfoError(f"{path}: {what} is not KVM's answer; record it with `virsh domcapabilities --virttype kvm`")
    return LibvirtFacts(uri=None, libvirt_version=libvirt_version, domcaps=domcaps, replayed_from=path)


# The label families that read libvirt's host capabilities (the TSC counter, the machine types).
HOST_CAPS_FAMILIES = frozenset({"tsc", "machine-types"})


def replay(options: ProbeOptions) -> LibvirtFacts:
    """The libvirt facts of a replay: --domcaps-xml, with --hostcaps-xml (`virsh capabilities`)
    and --cpu-baseline-xml (`virsh hypervisor-cpu-baseline --features`) when given; a family whose
    document was not given says so instead of guessing."""
    assert options.domcaps_xml is not None
    facts = replay_domcaps(options.domcaps_xml, options.replay_libvirt_version)
    if options.hostcaps_xml is not None:
        text = read_operator_file(options.hostcaps_xml, "host capabilities")
        try:
            caps = parse_hostcaps(text, source=options.hostcaps_xml)
        except HostcapsError as err:
            raise KvminfoError(str(err)) from None
        facts = replace(facts, host_capabilities=caps, tsc_counter=caps.tsc_counter)
    if options.cpu_baseline_xml is None:
        return replace(facts, cpu_features_missing="a replay has no CPU baseline (--cpu-baseline-xml)")
    text = read_operator_file(options.cpu_baseline_xml, "CPU baseline")
    arch = facts.domcaps.arch if facts.domcaps is not None else None
    try:
        return replace(facts, cpu_features=cpu_baseline.baseline_features(text, arch, options.cpu_baseline_xml))
    except cpu_baseline.BaselineError as err:
        raise KvminfoError(str(err)) from None


def ask_libvirt(uri: str, host_caps: bool = False, cpu_features: bool = False) -> SourceResult:
    """One blocking virConnectGetDomainCapabilities at ``uri`` (the runner bounds it); with
    ``host_caps`` also virConnectGetCapabilities (TSC counter, machine types: the "tsc" and
    "machine-types" families); with ``cpu_features`` the host-model's hypervisor CPU baseline
    ("cpu-features", kvminfo.sources.cpu_baseline). Newer flags only where the libvirt answering
    accepts them (cpu_baseline.label_flags, baseline_input_flags)."""
    try:
        import libvirt
    except ImportError:
        return SourceResult(LIBVIRT, Status.UNAVAILABLE, f"libvirt at {uri}: libvirt-python not installed",
                            LibvirtFacts(uri=uri))
    _silence_default_error_handler(libvirt)
    problem = prepare_connection(libvirt, uri)  # qemu:///embed?root=DIR: the event loop and DIR's set-up
    if problem is not None:
        return SourceResult(LIBVIRT, Status.UNAVAILABLE, f"libvirt at {uri}: {problem}", LibvirtFacts(uri=uri))
    version = qemu_version = None
    started = time.monotonic()
    try:
        # Not openReadOnly: libvirt 9.0 refuses virConnectGetDomainCapabilities
        # on a read-only connection ("operation forbidden").
        log.debug("libvirt: connecting to %s", uri)
        conn = libvirt.open(uri)
        try:
            number = conn.getLibVersion()
            version = _version_string(number)
            qemu_version = _hypervisor_version(conn, libvirt)
            log.debug("libvirt: %s is libvirt %s, QEMU %s (connected in %.1f ms)", uri, version,
                      qemu_version or "unknown", (time.monotonic() - started) * 1000)
            asked = time.monotonic()
            flags = cpu_baseline.label_flags(_version_tuple(number))
            xml_text = conn.getDomainCapabilities(None, None, None, "kvm", flags)
            log.debug("libvirt: domain capabilities (virttype kvm, flags %#x): %d bytes in %.1f ms", flags,
                      len(xml_text), (time.monotonic() - asked) * 1000)
            baseline = _ask_baseline(conn, libvirt, number, xml_text) if cpu_features else None
            if host_caps:
                asked = time.monotonic()
                host_caps_xml = conn.getCapabilities()
                log.debug("libvirt: host capabilities: %d bytes in %.1f ms", len(host_caps_xml),
                          (time.monotonic() - asked) * 1000)
            else:
                host_caps_xml = None
        finally:
            conn.close()
    except libvirt.libvirtError as err:
        log.debug("libvirt: %s failed after %.1f ms: %s", uri, (time.monotonic() - started) * 1000, one_line(err))
        return SourceResult(LIBVIRT, Status.UNAVAILABLE, f"libvirt at {uri}: {one_line(err)}",
                            LibvirtFacts(uri=uri, libvirt_version=version))
    try:
        domcaps = parse_domcaps(xml_text, source=f"libvirt at {uri}")
    except DomcapsError as err:
        # libvirt answered, but not with anything we can use: not the operator's input.
        return SourceResult(LIBVIRT, Status.ERROR, str(err), LibvirtFacts(uri=uri, libvirt_version=version))
    caps = _host_capabilities(host_caps_xml, uri) if host_caps_xml is not None else None
    features, features_missing = baseline if baseline is not None else (None, None)
    return SourceResult(LIBVIRT, Status.OK, "", LibvirtFacts(
        uri=uri, libvirt_version=version, domcaps=domcaps, qemu_version=qemu_version,
        tsc_counter=caps.tsc_counter if caps is not None else None, host_capabilities=caps,
        domcaps_flags=flags, cpu_features=features, cpu_features_missing=features_missing))


def _host_capabilities(host_caps: str, uri: str) -> HostCapabilities | None:
    """libvirt's host capabilities; a malformed answer only costs the families that read them."""
    try:
        return parse_hostcaps(host_caps, source=f"libvirt at {uri}")
    except HostcapsError as err:
        log.warning("%s; no TSC or machine-type labels", err)
        return None


def _ask_baseline(conn: Any, libvirt: Any, number: int,
                  label_domcaps: str) -> tuple[tuple[str, ...] | None, str | None]:
    """(feature names, None) from virConnectBaselineHypervisorCPU over the host-model with
    VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES, as `virsh hypervisor-cpu-baseline --features` in
    KubeVirt's node-labeller.sh; or (None, why not). The domain capabilities it reads are asked
    again only when the baseline wants more flags than the labels' copy had."""
    version = _version_tuple(number)
    if version < cpu_baseline.BASELINE_HYPERVISOR_SINCE:
        return None, f"libvirt {_version_string(number)} has no virConnectBaselineHypervisorCPU (4.4.0+)"
    try:
        root = ET.fromstring(label_domcaps)
        arch, machine = root.findtext("arch"), root.findtext("machine")
        if arch not in cpu_baseline.BASELINE_ARCHES:
            return None, (f"libvirt has no hypervisor CPU baseline for {arch or 'this architecture'} "
                          "(x86_64 and s390x only)")
        flags = cpu_baseline.baseline_input_flags(version)
        source = label_domcaps
        if flags != cpu_baseline.label_flags(version):
            source = conn.getDomainCapabilities(None, None, None, "kvm", flags)
        cpu = cpu_baseline.host_model_cpu_xml(source)
        if cpu is None:
            return None, "libvirt has no supported host-model to baseline"
        asked = time.monotonic()
        answer = conn.baselineHypervisorCPU(None, arch, machine, "kvm", [cpu], cpu_baseline.BASELINE_EXPAND_FEATURES)
    except ET.ParseError as err:
        return None, f"libvirt's domain capabilities are not valid XML: {err}"
    except libvirt.libvirtError as err:
        return None, f"libvirt's hypervisor CPU baseline failed: {one_line(err)}"
    log.debug("libvirt: hypervisor CPU baseline (flags %#x): %d bytes in %.1f ms", flags, len(answer),
              (time.monotonic() - asked) * 1000)
    try:
        return cpu_baseline.baseline_features(answer, arch, "libvirt's CPU baseline"), None
    except cpu_baseline.BaselineError as err:
        return None, str(err)


_handler_lock = threading.Lock()
_handler_installed = False


def _silence_default_error_handler(libvirt: Any) -> None:
    """libvirt's default handler prints every error to stderr; we report errors ourselves."""
    global _handler_installed
    with _handler_lock:
        if not _handler_installed:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _handler_installed = True


def _hypervisor_version(conn: Any, libvirt: Any) -> str | None:
    """virConnectGetVersion: the hypervisor's (QEMU's) version, "X.Y.Z"; None when the driver
    cannot say (it then answers 0 or fails). Only the Hyper-V rule for old QEMU needs it (FACTS.md 7)."""
    try:
        number = conn.getVersion()
    except libvirt.libvirtError as err:
        log.debug("libvirt: no hypervisor version: %s", one_line(err))
        return None
    return _version_string(number) if number > 0 else None


def _version_tuple(number: int) -> tuple[int, int, int]:
    return number // 1_000_000, number // 1_000 % 1_000, number % 1_000


def _version_string(number: int) -> str:
    """libvirt encodes versions as major * 1_000_000 + minor * 1_000 + micro."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


class LibvirtSource:
    """libvirt's domain capabilities (--libvirt-uri, --libvirt-timeout), or a replay (--domcaps-xml)."""

    name = LIBVIRT

    def describe(self, options: ProbeOptions) -> str:
        if options.domcaps_xml is not None:
            return f"libvirt replay {options.domcaps_xml}"
        return f"libvirt at {options.libvirt_uri}"

    def deadline_s(self, options: ProbeOptions) -> float:
        return options.libvirt_deadline_s

    def probe(self, options: ProbeOptions) -> SourceResult:
        if options.domcaps_xml is not None:
            replayed = ", ".join(p for p in (options.domcaps_xml, options.hostcaps_xml, options.cpu_baseline_xml) if p)
            return SourceResult(LIBVIRT, Status.OK, f"replayed {replayed}", replay(options))
        return ask_libvirt(options.libvirt_uri or DEFAULT_LIBVIRT_URI,
                           host_caps=bool(HOST_CAPS_FAMILIES & set(options.families)),
                           cpu_features="cpu-features" in options.families)

    def summary(self, result: SourceResult) -> str:
        f = result.facts
        assert isinstance(f, LibvirtFacts) and f.domcaps is not None
        caps = f.domcaps
        parts = [f"libvirt {f.libvirt_version}"] if f.libvirt_version else []
        if f.qemu_version:
            parts.append(f"QEMU {f.qemu_version}")
        parts.append(f"host-model {caps.host_model.model}" if caps.host_model and caps.host_model.model
                     else "no host-model")
        if caps.max_vcpus is not None:  # <vcpu max=...> is absent from some domain capabilities
            parts.append(f"max vCPUs {caps.max_vcpus}")
        parts.append("no <hyperv> element" if caps.hyperv is None else f"hyperv: {', '.join(caps.hyperv) or 'none'}")
        return ", ".join(parts)

    def attributes(self, result: SourceResult) -> dict[str, object]:
        """NodeFeature attributes kvminfo.libvirt: version, max_vcpus, host_model, sev, sgx, tdx, ..."""
        f = result.facts
        assert isinstance(f, LibvirtFacts) and f.domcaps is not None
        caps = f.domcaps
        host_model = caps.host_model
        return {
            "version": f.libvirt_version,
            "max_vcpus": caps.max_vcpus,
            "host_model": host_model.model if host_model else None,
            "host_model_vendor": host_model.vendor if host_model else None,
            "hyperv_supported": caps.hyperv_supported,
            "sev": caps.sev,
            "sgx": caps.sgx,
            "tdx": caps.tdx,
            "domain_type": caps.domain_type,
        }

    def labels(self, result: SourceResult) -> dict[str, str]:
        return {}


SOURCE = LibvirtSource()
