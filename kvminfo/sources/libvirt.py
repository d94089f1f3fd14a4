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
from typing import TYPE_CHECKING

from kvminfo.common.errors import KvminfoError, one_line
from kvminfo.model import DEFAULT_LIBVIRT_URI, ProbeOptions, SourceResult, Status
from kvminfo.sources.domcaps import DomcapsError, parse_domcaps
from kvminfo.sources.domcaps_families import host_tsc_counter
from kvminfo.sources.facts import LIBVIRT
from kvminfo.sources.libvirt_facts import LibvirtFacts
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


def ask_libvirt(uri: str, tsc: bool = False) -> SourceResult:
    """One blocking virConnectGetDomainCapabilities at ``uri`` (the runner bounds it); with ``tsc``
    also virConnectGetCapabilities for the host's <counter name='tsc'> (the "tsc" label family)."""
    try:
        import libvirt
    except ImportError:
        return SourceResult(LIBVIRT, Status.UNAVAILABLE, f"libvirt at {uri}: libvirt-python not installed",
                            LibvirtFacts(uri=uri))
    _silence_default_error_handler(libvirt)
    version = qemu_version = None
    started = time.monotonic()
    try:
        # Not openReadOnly: libvirt 9.0 refuses virConnectGetDomainCapabilities
        # on a read-only connection ("operation forbidden").
        log.debug("libvirt: connecting to %s", uri)
        conn = libvirt.open(uri)
        try:
            version = _version_string(conn.getLibVersion())
            qemu_version = _hypervisor_version(conn, libvirt)
            log.debug("libvirt: %s is libvirt %s, QEMU %s (connected in %.1f ms)", uri, version,
                      qemu_version or "unknown", (time.monotonic() - started) * 1000)
            asked = time.monotonic()
            xml_text = conn.getDomainCapabilities(None, None, None, "kvm")
            log.debug("libvirt: domain capabilities (virttype kvm): %d bytes in %.1f ms", len(xml_text),
                      (time.monotonic() - asked) * 1000)
            if tsc:
                asked = time.monotonic()
                host_caps = conn.getCapabilities()
                log.debug("libvirt: host capabilities: %d bytes in %.1f ms", len(host_caps),
                          (time.monotonic() - asked) * 1000)
            else:
                host_caps = None
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
    counter = _tsc_counter(host_caps, uri) if host_caps is not None else None
    return SourceResult(LIBVIRT, Status.OK, "", LibvirtFacts(uri=uri, libvirt_version=version, domcaps=domcaps,
                                                            qemu_version=qemu_version, tsc_counter=counter))


def _tsc_counter(host_caps: str, uri: str) -> dict[str, Any] | None:
    """The TSC counter of libvirt's host capabilities; a malformed answer only costs the TSC labels."""
    try:
        return host_tsc_counter(host_caps)
    except ET.ParseError as err:
        log.warning("libvirt at %s: host capabilities are not valid XML (%s); no TSC labels", uri, err)
        return None


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
            return SourceResult(LIBVIRT, Status.OK, f"replayed {options.domcaps_xml}",
                                replay_domcaps(options.domcaps_xml, options.replay_libvirt_version))
        return ask_libvirt(options.libvirt_uri or DEFAULT_LIBVIRT_URI, tsc="tsc" in options.families)

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
