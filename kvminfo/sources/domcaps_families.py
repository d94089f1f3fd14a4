"""Parse the parts of libvirt's domain capabilities that CPU-model and
confidential-computing labels need: raw facts only, no decisions.

Pure: an ElementTree root in, JSON-serialisable dicts out. The meaning of
each element is libvirt's (docs/formatdomaincaps.rst; dates from the Go
binding libvirt-go-xml-module, see ../shared/corpus/domcaps/FACTS.md 5,
13-17):

- ``<cpu><mode name='custom' supported='yes'>`` lists ``<model usable='yes|no|unknown'
  [vendor=...] [deprecated='yes'] [canonical=...]>NAME</model>``, possibly with
  ``<blockers>`` elements in between (libvirt >= 10.9) and duplicate names
  (ppc64 recordings list POWER8 twice).
- ``<cpu><mode name='host-model' supported='yes'>`` has ``<model>``,
  ``<vendor>`` and ``<feature policy='require|disable' name=.../>``.
- ``<features><sev supported=...>`` with ``cbitpos``, ``reducedPhysBits``,
  ``maxGuests``, ``maxESGuests`` (the last two since libvirt 8.0).
- ``<features><sgx supported=...>`` with ``flc``/``sgx1``/``sgx2`` (yes/no) and
  ``<section_size unit='KiB'>`` (the EPC size; libvirt >= 8.10).
- ``<features><tdx supported=.../>`` (libvirt >= 11.6, attribute only).
- ``<features><launchSecurity supported=...><enum name='sectype'>`` with values
  ``sev``, ``sev-snp``, ``tdx``, ``s390-pv`` (libvirt >= 10.5).

Absent elements stay None ("libvirt did not say"), never False.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from kvminfo.sources.domcaps_xml import ascii_int, supported_cpu_mode, text, yes_no

# libvirt's scaled-integer units (docs: "unit" attribute of memory sizes); EPC is written in KiB.
_UNIT_BYTES = {"b": 1, "bytes": 1, "k": 1024, "KiB": 1024, "M": 1024**2, "MiB": 1024**2,
               "G": 1024**3, "GiB": 1024**3, "T": 1024**4, "TiB": 1024**4,
               "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}


def _int(node: ET.Element | None) -> int | None:
    return ascii_int(text(node))


def custom_models(root: ET.Element) -> list[dict[str, Any]] | None:
    """Every ``<model>`` of the custom CPU mode, in document order, duplicates dropped.

    None when the mode is absent or not supported (libvirt offers no named models).
    """
    mode = supported_cpu_mode(root, "custom")
    if mode is None:
        return None
    models: dict[str, dict[str, Any]] = {}
    for node in mode.findall("model"):
        name = text(node)
        if name is None or name in models:
            continue
        models[name] = {"name": name, "usable": node.get("usable"), "deprecated": node.get("deprecated") == "yes",
                        "vendor": node.get("vendor"), "canonical": node.get("canonical")}
    return list(models.values())


def host_model_required_features(root: ET.Element) -> list[str] | None:
    """Names of the host-model's ``<feature policy='require'>``; None without a supported host-model."""
    mode = supported_cpu_mode(root, "host-model")
    if mode is None:
        return None
    return list(dict.fromkeys(n.get("name", "") for n in mode.findall("feature")
                              if n.get("policy") == "require" and n.get("name")))


def _sev(node: ET.Element | None) -> dict[str, Any] | None:
    if node is None:
        return None
    return {"supported": yes_no(node.get("supported")), "cbitpos": _int(node.find("cbitpos")),
            "reduced_phys_bits": _int(node.find("reducedPhysBits")), "max_guests": _int(node.find("maxGuests")),
            "max_es_guests": _int(node.find("maxESGuests"))}


def _epc_bytes(node: ET.Element | None) -> int | None:
    size = _int(node)
    if node is None or size is None:
        return None
    factor = _UNIT_BYTES.get(node.get("unit", "KiB"))
    return None if factor is None else size * factor


def _sgx(node: ET.Element | None) -> dict[str, Any] | None:
    if node is None:
        return None
    return {"supported": yes_no(node.get("supported")), "flc": yes_no(text(node.find("flc"))),
            "sgx1": yes_no(text(node.find("sgx1"))), "sgx2": yes_no(text(node.find("sgx2"))),
            "epc_bytes": _epc_bytes(node.find("section_size"))}


def _launch_security(node: ET.Element | None) -> list[str] | None:
    """sectype values; [] when <launchSecurity supported='no'> or empty; None when absent."""
    if node is None:
        return None
    if node.get("supported") != "yes":
        return []
    return [v for v in (text(n) for n in node.findall("enum[@name='sectype']/value")) if v]


def confidential_facts(root: ET.Element) -> dict[str, Any]:
    """{sev, sgx: dict|None, tdx: bool|None, s390_pv: bool|None, launch_security: [sectype]|None}."""
    features = root.find("features")

    def child(name: str) -> ET.Element | None:
        return features.find(name) if features is not None else None

    tdx, s390_pv = child("tdx"), child("s390-pv")
    return {
        "sev": _sev(child("sev")),
        "sgx": _sgx(child("sgx")),
        "tdx": None if tdx is None else yes_no(tdx.get("supported")),
        "s390_pv": None if s390_pv is None else yes_no(s390_pv.get("supported")),
        "launch_security": _launch_security(child("launchSecurity")),
    }


def family_facts(root: ET.Element) -> dict[str, Any]:
    """The facts the CPU-model and confidential-computing families read, as libvirt fact keys."""
    return {"cpu_models": custom_models(root),
            "host_model_required_features": host_model_required_features(root),
            "confidential": confidential_facts(root)}


def host_tsc_counter(capabilities_xml: str) -> dict[str, Any] | None:
    """libvirt host capabilities (``virsh capabilities``) ``<host><cpu><counter name='tsc'
    frequency='HZ' scaling='yes|no'/>``: {frequency_hz:int, scaling:bool|None}, or None when absent.

    libvirt fills it from KVM (KVM_GET_TSC_KHZ x 1000 and KVM_CAP_TSC_CONTROL); this is what
    KubeVirt's node labeller reads for cpu-timer.node.kubevirt.io/tsc-frequency and tsc-scalable.
    Raises ET.ParseError on malformed XML (the caller reports it).
    """
    root = ET.fromstring(capabilities_xml)
    counter = root.find("host/cpu/counter[@name='tsc']")
    if counter is None:
        return None
    frequency_hz = ascii_int(counter.get("frequency"))
    if frequency_hz is None:
        return None
    return {"frequency_hz": frequency_hz, "scaling": yes_no(counter.get("scaling"))}
