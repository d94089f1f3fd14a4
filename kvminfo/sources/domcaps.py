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
from kvminfo.sources.domcaps_families import custom_models, family_facts
from kvminfo.sources.domcaps_xml import ascii_int, supported_cpu_mode, text
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
    hyperv = _hyperv(root.find("features"))
    families = family_facts(root)
    confidential = families["confidential"]  # <features><NAME supported='yes'> is True there
    return DomainCapabilities(
        domain_type=text(root.find("domain")),
        arch=text(root.find("arch")),
        machine=text(root.find("machine")),
        emulator=text(root.find("path")),
        max_vcpus=_int_attr(root.find("vcpu"), "max"),
        hyperv=hyperv["features"],
        hyperv_supported=hyperv["supported"],
        hyperv_defaults=hyperv["defaults"],
        host_model=_host_model(root),
        custom_models=[m["name"] for m in custom_models(root) or () if m["usable"] == "yes"],
        sev=bool(confidential["sev"] and confidential["sev"]["supported"]),
        sgx=bool(confidential["sgx"] and confidential["sgx"]["supported"]),
        tdx=confidential["tdx"] is True,
        **families,
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


def _int_attr(node: ET.Element | None, name: str) -> int | None:
    if node is None:
        return None
    try:
        return int(node.get(name, ""))
    except ValueError:
        return None


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
    names = [name for name in (text(v) for v in node.findall("enum[@name='features']/value")) if name]
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
        value = text(child)
        if value is None:
            continue
        if value in _SWITCH:
            out[child.tag] = _SWITCH[value]
        else:
            number = ascii_int(value)
            out[child.tag] = value if number is None else number
    return out


# libvirt's virTristateSwitch spelling for on/off values.
_SWITCH = {"on": True, "off": False}


def _host_model(root: ET.Element) -> HostModel | None:
    mode = supported_cpu_mode(root, "host-model")
    if mode is None:
        return None
    return HostModel(model=text(mode.find("model")), vendor=text(mode.find("vendor")))
