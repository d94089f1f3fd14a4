"""What a CDI runtime checks when it loads a spec, written from the CDI project's
own files, not from the plugin: the JSON schema (../shared/corpus/cdi/schema/ at
HEAD and schema-v1.1.0/, validated with jsonschema) and the rules the schema does
not encode (../shared/corpus/cdi/FACTS.md: name rules from pkg/parser/parser.go,
minimum versions from specs-go/version.go, device-node checks from
pkg/cdi/container-edits*.go)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

# Copies of ../shared/corpus/cdi/schema*/ (tests/fixtures/README.md), so every plugin test runs in any clone.
SCHEMAS = Path(__file__).resolve().parent / "fixtures" / "cdi"
VERSIONS = ["0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0"]
_VENDOR_OR_CLASS = re.compile(r"[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
_DEVICE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?")


def _validator(folder: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / folder / "schema.json").read_text())
    defs = json.loads((SCHEMAS / folder / "defs.json").read_text())
    registry = Registry().with_resource("defs.json", Resource.from_contents(defs, default_specification=DRAFT7))
    return jsonschema.Draft7Validator(schema, registry=registry)


def minimum_version(spec: dict[str, Any]) -> str:
    """The subset of specs-go/version.go's rules a device-node/mount/env spec can hit."""
    devices = spec["devices"]
    edits = [spec.get("containerEdits", {})] + [d["containerEdits"] for d in devices]
    if spec.get("annotations") or any(d.get("annotations") for d in devices) or "." in spec["kind"].split("/", 1)[1]:
        return "0.6.0"
    if any(d["name"][0] in "0123456789" for d in devices) or any(n.get("hostPath") for e in edits for n in e.get("deviceNodes", [])):
        return "0.5.0"
    if any(m.get("type") for e in edits for m in e.get("mounts", [])):
        return "0.4.0"
    return "0.3.0"


def problems(spec: dict[str, Any]) -> list[str]:
    """Everything a CDI runtime would refuse in ``spec`` (empty: accepted)."""
    found = [f"schema {folder}: {error.message}" for folder in ("schema", "schema-v1.1.0")
             for error in _validator(folder).iter_errors(spec)]
    if found:
        return found
    vendor, _, cls = spec["kind"].partition("/")
    if not (_VENDOR_OR_CLASS.fullmatch(vendor) and _VENDOR_OR_CLASS.fullmatch(cls)):
        found.append(f"kind {spec['kind']!r}: vendor and class must start with a letter")
    if spec["cdiVersion"].lstrip("v") not in VERSIONS:
        found.append(f"unknown cdiVersion {spec['cdiVersion']!r}")
    elif VERSIONS.index(spec["cdiVersion"].lstrip("v")) < VERSIONS.index(minimum_version(spec)):
        found.append(f"the spec version must be at least v{minimum_version(spec)}")
    names = [d["name"] for d in spec["devices"]]
    found += [f"device name {n!r}" for n in names if not _DEVICE_NAME.fullmatch(n)]
    found += [f"multiple device {n!r}" for n in set(names) if names.count(n) > 1]
    found += [f"device {d['name']!r}: empty device edits" for d in spec["devices"] if not d["containerEdits"]]
    # fileMode is not in the schema; specs-go/config.go decodes it into *os.FileMode (a uint32):
    # Go's encoding/json takes only a non-negative integer number there, never a string like "0666".
    nodes = [n for e in [spec.get("containerEdits", {})] + [d["containerEdits"] for d in spec["devices"]]
             for n in e.get("deviceNodes", [])]
    found += [f"deviceNode {n['path']!r}: fileMode {n['fileMode']!r} is not a uint32 number" for n in nodes
              if "fileMode" in n and not (type(n["fileMode"]) is int and 0 <= n["fileMode"] < 2**32)]
    return found


def oci_device(node: dict[str, Any], process_uid: int, process_gid: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What CDI v1.1.0 injects for one deviceNode into an OCI spec whose process runs as
    process_uid:process_gid: (linux.devices entry, linux.resources.devices rule).
    pkg/cdi/container-edits_unix.go fillMissingInfo: type/major/minor from lstat() of the host
    path (hostPath, else path), and, since v1.1.0 (commit 457489d), the host node's mode when the
    spec gives no fileMode; pkg/cdi/oci.go toOCI copies fileMode/uid/gid; pkg/cdi/container-edits.go
    Apply: uid/gid not given and the process's non-zero -> the process's; permissions "" -> rwm."""
    st = os.lstat(node.get("hostPath") or node["path"])
    device: dict[str, Any] = {"path": node["path"], "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                              "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                              "fileMode": node.get("fileMode", stat.S_IMODE(st.st_mode))}
    for key, process_id in (("uid", process_uid), ("gid", process_gid)):
        if key in node:
            device[key] = node[key]
        elif process_id > 0:
            device[key] = process_id
    rule = {"allow": True, "type": device["type"], "major": device["major"], "minor": device["minor"],
            "access": node.get("permissions") or "rwm"}
    return device, rule


def host_node_problems(spec: dict[str, Any]) -> list[str]:
    """What injection would fail on this host: each device node's host path (hostPath,
    else path) must lstat() as a device node (container-edits_unix.go deviceInfoFromPath)."""
    found = []
    for device in spec["devices"]:
        for node in device["containerEdits"].get("deviceNodes", []):
            host = node.get("hostPath") or node["path"]
            try:
                mode = os.lstat(host).st_mode
            except OSError as err:
                found.append(f"{host}: {err.strerror}")
                continue
            if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
                found.append(f"{host}: not a device node")
    return found
