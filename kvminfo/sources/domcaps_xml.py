"""Pure: the element readers both domain capabilities parsers use (kvminfo.sources.domcaps for the
Hyper-V and host facts, kvminfo.sources.domcaps_families for the label families' facts).

libvirt writes values as element text or attributes (docs/formatdomaincaps.rst); an absent
element or attribute is None here ("libvirt did not say"), never False or 0.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

# A libvirt count or size is small; the bound keeps clear of Python's 4300-digit int() limit.
_MAX_DIGITS = 18


def text(node: ET.Element | None) -> str | None:
    """The element's stripped text; None when the element is absent or its text is blank."""
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def ascii_int(value: str | None) -> int | None:
    """An unsigned decimal number written in ASCII digits, else None. str.isdigit() alone also
    accepts '²', which int() refuses."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > _MAX_DIGITS:
        return None
    return int(value)


def yes_no(value: str | None) -> bool | None:
    """libvirt's 'yes'/'no' attribute values; None for anything else (absent included)."""
    return {"yes": True, "no": False}.get(value or "")


def supported_cpu_mode(root: ET.Element, name: str) -> ET.Element | None:
    """``<cpu><mode name=NAME supported='yes'>`` ('host-model', 'custom', ...), or None."""
    mode = root.find(f"cpu/mode[@name='{name}']")
    if mode is None or mode.get("supported") != "yes":
        return None
    return mode
