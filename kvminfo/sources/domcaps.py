"""Parse libvirt's domain capabilities XML (`virsh domcapabilities`) into raw facts.

Pure: text in, DomainCapabilities (kvminfo/sources/facts.py) out; I/O lives in
kvminfo.sources.libvirt. A document that is not domain capabilities raises
DomcapsError; the caller decides whose fault that is (the operator's replay
file, or a libvirt answering garbage).

Parser choice: the stdlib ElementTree (expat). The XML comes from the local
libvirt daemon or from a file the operator names on the command line, so it is
not attacker-controlled; expat >= 2.4 (Debian 12 ships 2.5) also caps entity
amplification ("billion laughs") and ElementTree never fetches external
entities. defusedxml would add a dependency for no threat we face.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from kvminfo.common.errors import ParseError
from kvminfo.sources.domcaps_families import family_facts
from kvminfo.sources.libvirt_facts import DomainCapabilities, HostModel

ROOT_TAG = "domainCapabilities"


class DomcapsError(ParseError):
    """Not a domain capabilities document; the message names where it came from."""


def parse_domcaps(xml_text: str, source: str = "domain capabilities") -> DomainCapabilities:
    """Facts from one domain capabilities document.

    ``source`` names where the text came from (a file path, or the libvirt
    URI) so that the error message points the operator at the culprit.
    """
    root = _parse_root(xml_text, source)
    features = root.find("features")
    hyperv = _hyperv(features)
    return DomainCapabilities(
        domain_type=_text(root, "domain"),
        arch=_text(root, "arch"),
        machine=_text(root, "machine"),
        emulator=_text(root, "path"),
        max_vcpus=_int_attr(root.find("vcpu"), "max"),
        hyperv=hyperv["features"],
        hyperv_supported=hyperv["supported"],
        hyperv_defaults=hyperv["defaults"],
        host_model=_host_model(root),
        custom_models=_usable_custom_models(root),
        sev=_supported(features, "sev"),
        sgx=_supported(features, "sgx"),
        tdx=_supported(features, "tdx"),
        **family_facts(root),
    )


def _parse_root(xml_text: str, source: str) -> ET.Element:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise DomcapsError(f"{source}: not valid domain capabilities XML: {err}") from None
    if root.tag != ROOT_TAG:
        raise DomcapsError(
            f"{source}: not valid domain capabilities XML: root element is <{root.tag}>, expected <{ROOT_TAG}>"
        )
    return root


def _text(parent: ET.Element | None, path: str) -> str | None:
    if parent is None:
        return None
    node = parent.find(path)
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def _int_attr(node: ET.Element | None, name: str) -> int | None:
    if node is None:
        return None
    try:
        return int(node.get(name, ""))
    except ValueError:
        return None


def _supported(features: ET.Element | None, name: str) -> bool:
    """``<features><NAME supported='yes'>``; absent means libvirt does not offer it."""
    node = features.find(name) if features is not None else None
    return node is not None and node.get("supported") == "yes"


def _hyperv(features: ET.Element | None) -> dict[str, Any]:
    """Hyper-V enlightenments libvirt offers for this host.

    No <hyperv> element (libvirt < 9.0) means libvirt does not say: features
    is None ("unknown"), never [] ("none supported").
    """
    node = features.find("hyperv") if features is not None else None
    if node is None:
        return {"features": None, "supported": None, "defaults": {}}
    if node.get("supported") != "yes":
        return {"features": [], "supported": False, "defaults": {}}
    names = [v.text.strip() for v in node.findall("enum[@name='features']/value") if v.text and v.text.strip()]
    return {"features": names, "supported": True, "defaults": _hyperv_defaults(node.find("defaults"))}


def _hyperv_defaults(defaults: ET.Element | None) -> dict[str, int | str | bool]:
    """libvirt >= 11.9 `<defaults>`: what `<hyperv mode='host-model'>` would use.

    libvirt writes every child as text (libvirt commit "conf: Report default
    hyperv values in domain capabilities"; shared/corpus/domcaps FACTS.md 12):
    `<spinlocks>4095</spinlocks>` (retry count), `<stimer_direct>on</stimer_direct>`,
    `<tlbflush_direct>on</tlbflush_direct>`, `<tlbflush_extended>on</tlbflush_extended>`
    (on/off), `<vendor_id>Linux KVM Hv</vendor_id>`. "on"/"off" become True/False,
    an ASCII number an int, anything else stays text. Each child is read on its
    own; an absent one says nothing.
    """
    if defaults is None:
        return {}
    out: dict[str, int | str | bool] = {}
    for child in defaults:
        text = (child.text or "").strip()
        if not text:
            continue
        if text in _SWITCH:
            out[child.tag] = _SWITCH[text]
        # ASCII digits only: str.isdigit() also accepts '²', which int() refuses; the length
        # bound keeps clear of Python's 4300-digit int() limit (a retry count is small).
        elif text.isascii() and text.isdigit() and len(text) <= 18:
            out[child.tag] = int(text)
        else:
            out[child.tag] = text
    return out


# libvirt's virTristateSwitch spelling for on/off values.
_SWITCH = {"on": True, "off": False}


def _host_model(root: ET.Element) -> HostModel | None:
    mode = root.find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") != "yes":
        return None
    return HostModel(model=_text(mode, "model"), vendor=_text(mode, "vendor"))


def _usable_custom_models(root: ET.Element) -> list[str]:
    mode = root.find("cpu/mode[@name='custom']")
    if mode is None or mode.get("supported") != "yes":
        return []
    return [m.text.strip() for m in mode.findall("model") if m.get("usable") == "yes" and m.text and m.text.strip()]
