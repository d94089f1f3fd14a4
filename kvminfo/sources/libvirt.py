"""libvirt source: domain capabilities for virttype kvm, bounded by a deadline.

libvirt can hang (a SIGSTOPped or wedged daemon still accepts the socket
connection, then never answers), and libvirt-python's calls block in C. So the
call runs in a daemon thread and we stop waiting at the deadline; the other
sources still report. ``libvirt`` is imported lazily: the NFD hook path must
never pay for it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kvminfo.errors import KvminfoError, one_line
from kvminfo.model import SourceResult, Status
from kvminfo.sources.domcaps import parse_domcaps
from kvminfo.sources.operator_file import read_operator_file

NAME = "libvirt"
log = logging.getLogger(__name__)

# URI -> the thread still blocked inside libvirt from an earlier probe. A
# long-running caller (features-file --interval) must not pile up one stuck
# thread per interval while libvirt stays hung.
_stuck: dict[str, threading.Thread] = {}
_stuck_lock = threading.Lock()


def probe_libvirt(uri: str, deadline_s: float, domcaps_xml: str | None = None) -> SourceResult:
    """Ask libvirt at ``uri`` (or replay the file ``domcaps_xml``) for its domain capabilities.

    A replay file is the operator's explicit input: unreadable or malformed
    raises KvminfoError. A live libvirt that is down, hung or answers garbage
    gives a non-OK SourceResult instead, so the other sources still count.
    """
    started = time.monotonic()
    if domcaps_xml is not None:
        facts = replay_domcaps(domcaps_xml)
        return SourceResult(NAME, Status.OK, f"replayed {domcaps_xml}", facts, _ms_since(started))
    status, reason, facts = _ask_live(uri, deadline_s)
    return SourceResult(NAME, status, reason, facts, _ms_since(started))


def replay_domcaps(path: str) -> dict[str, Any]:
    text = read_operator_file(path, "domain capabilities")
    return {**parse_domcaps(text, source=path), "uri": None, "libvirt_version": None, "replayed_from": path}


def _ask_live(uri: str, deadline_s: float) -> tuple[Status, str, dict[str, Any]]:
    try:
        import libvirt  # noqa: F401  (lazy: see module docstring)
    except ImportError:
        return Status.UNAVAILABLE, "libvirt-python not installed", {"uri": uri}

    with _stuck_lock:
        previous = _stuck.get(uri)
        if previous is not None and previous.is_alive():
            return Status.TIMEOUT, f"libvirt at {uri} still has not answered an earlier call", {"uri": uri}
        _stuck.pop(uri, None)

    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=_call_libvirt, args=(uri, outcome), name=f"libvirt-probe {uri}", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        with _stuck_lock:
            _stuck[uri] = worker
        log.warning("libvirt at %s did not answer within %gs; reporting it as timed out", uri, deadline_s)
        return Status.TIMEOUT, f"libvirt did not answer within {deadline_s:g}s", {"uri": uri}
    if "status" not in outcome:  # the worker died of something other than a libvirt error
        return Status.ERROR, f"internal error: {outcome.get('crash', 'no result')}", {"uri": uri}
    return outcome["status"], outcome["reason"], outcome["facts"]


def _call_libvirt(uri: str, outcome: dict[str, Any]) -> None:
    """Runs in the worker thread; fills ``outcome`` with status, reason, facts."""
    try:
        _call_libvirt_unguarded(uri, outcome)
    except Exception as err:  # a bug here must become one source's error, not a lost thread
        log.error("libvirt probe of %s failed: %s: %s", uri, type(err).__name__, err)
        outcome["crash"] = f"{type(err).__name__}: {err}"


def _call_libvirt_unguarded(uri: str, outcome: dict[str, Any]) -> None:
    import libvirt

    _silence_default_error_handler(libvirt)
    facts: dict[str, Any] = {"uri": uri}
    try:
        # Not openReadOnly: libvirt 9.0 refuses virConnectGetDomainCapabilities
        # on a read-only connection ("operation forbidden").
        conn = libvirt.open(uri)
        try:
            facts["libvirt_version"] = _version_string(conn.getLibVersion())
            xml_text = conn.getDomainCapabilities(None, None, None, "kvm")
        finally:
            conn.close()
    except libvirt.libvirtError as err:
        outcome.update(status=Status.UNAVAILABLE, reason=one_line(err), facts=facts)
        return
    try:
        facts.update(parse_domcaps(xml_text, source=f"libvirt at {uri}"))
    except KvminfoError as err:
        # libvirt answered, but not with anything we can use: not the operator's input.
        outcome.update(status=Status.ERROR, reason=str(err), facts=facts)
        return
    outcome.update(status=Status.OK, reason="", facts=facts)


_handler_lock = threading.Lock()
_handler_installed = False


def _silence_default_error_handler(libvirt: Any) -> None:
    """libvirt's default handler prints every error to stderr; we report errors ourselves."""
    global _handler_installed
    with _handler_lock:
        if not _handler_installed:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _handler_installed = True


def _version_string(number: int) -> str:
    """libvirt encodes versions as major * 1_000_000 + minor * 1_000 + micro."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 3)
