"""Pure: would the API server accept this ResourceSlice (resource.k8s.io/v1)? Checked at
start, so a slice the server would refuse stops the driver in one line instead of a
retry loop. The limits of k8s.io/api/resource/v1/types.go (../shared/corpus/dra/FACTS.md
section 3): ResourceSliceMaxDevices 128 (64 with taints or counters),
ResourceSliceMaxAttributesAndCapacitiesPerDevice 32, ResourceSliceMaxAttributeValuesPerDevice
48, DriverNameMaxLength 63, PoolNameMaxLength 253, DeviceMaxIDLength 32,
DeviceMaxDomainLength 63, DeviceAttributeMaxValueLength 64; names per apimachinery
(DNS subdomains and labels, kvminfo.k8snames).
"""

from __future__ import annotations

import re
from typing import Any

from kvminfo_dra.attributes import SEMVER
from kvminfo_dra.upstream import DNS_SUBDOMAIN_MAX, KvminfoError, is_dns_label, is_dns_subdomain

MAX_DEVICES = 128
MAX_DEVICES_ADVANCED = 64
MAX_ATTRIBUTES_AND_CAPACITIES = 32
MAX_ATTRIBUTE_VALUES = 48
DRIVER_NAME_MAX = 63
POOL_NAME_MAX = 253
ID_MAX = 32
DOMAIN_MAX = 63
VALUE_MAX = 64
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VALUE_KINDS = ("bool", "int", "string", "version")


def driver_name_problem(name: str) -> str | None:
    if len(name) > DRIVER_NAME_MAX or not is_dns_subdomain(name):
        return f"driver name {name!r}: must be a lowercase DNS subdomain of at most {DRIVER_NAME_MAX} characters"
    return None


def qualified_name_problem(name: str) -> str | None:
    """An attribute or capacity name: ``<domain>/<ID>`` or a bare ID."""
    domain, slash, ident = name.rpartition("/")
    if slash and (len(domain) > DOMAIN_MAX or not is_dns_subdomain(domain)):
        return f"{name!r}: the domain must be a DNS subdomain of at most {DOMAIN_MAX} characters"
    if len(ident) > ID_MAX or not _C_IDENTIFIER.fullmatch(ident):
        return f"{name!r}: the ID must be a C identifier of at most {ID_MAX} characters"
    return None


def attribute_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, dict) or len([k for k in _VALUE_KINDS if k in value]) != 1 or set(value) - set(_VALUE_KINDS):
        return f"attribute {name}: exactly one of {', '.join(_VALUE_KINDS)} must be set"
    kind, item = next(iter(value.items()))
    if kind == "bool" and not isinstance(item, bool):
        return f"attribute {name}: bool value {item!r} is not a boolean"
    if kind == "int" and (isinstance(item, bool) or not isinstance(item, int) or not -2**63 <= item < 2**63):
        return f"attribute {name}: int value {item!r} is not a 64-bit integer"
    if kind in ("string", "version") and (not isinstance(item, str) or len(item) > VALUE_MAX):
        return f"attribute {name}: {kind} value {item!r} is longer than {VALUE_MAX} characters"
    if kind == "version" and not SEMVER.fullmatch(item):
        return f"attribute {name}: version value {item!r} is not a semantic version"
    return None


def device_problems(device: dict[str, Any]) -> list[str]:
    name = device.get("name", "")
    where = f"device {name!r}"
    problems = [] if is_dns_label(name) else [f"{where}: the name must be a DNS label"]
    attributes, capacity = device.get("attributes") or {}, device.get("capacity") or {}
    if len(attributes) + len(capacity) > MAX_ATTRIBUTES_AND_CAPACITIES:
        problems.append(f"{where}: {len(attributes) + len(capacity)} attributes and capacities, at most "
                        f"{MAX_ATTRIBUTES_AND_CAPACITIES}")
    if len(attributes) > MAX_ATTRIBUTE_VALUES:  # scalar values count one each (no list attributes here)
        problems.append(f"{where}: more than {MAX_ATTRIBUTE_VALUES} attribute values")
    for key, value in attributes.items():
        problems += [f"{where}: {p}" for p in (qualified_name_problem(key), attribute_problem(key, value)) if p]
    for key in capacity:
        problems += [f"{where}: capacity {p}" for p in (qualified_name_problem(key),) if p]
    return problems


def slice_problems(body: dict[str, Any]) -> list[str]:
    spec = body.get("spec") or {}
    problems = [p for p in (driver_name_problem(spec.get("driver", "")),) if p]
    pool = spec.get("pool") or {}
    pool_name = pool.get("name", "")
    if not pool_name or len(pool_name) > POOL_NAME_MAX or not all(is_dns_subdomain(p) for p in pool_name.split("/")):
        problems.append(f"pool name {pool_name!r}: must be DNS subdomains separated by '/', at most {POOL_NAME_MAX}")
    name = (body.get("metadata") or {}).get("name", "")
    if len(name) > DNS_SUBDOMAIN_MAX or not is_dns_subdomain(name):
        problems.append(f"slice name {name!r}: must be a lowercase DNS subdomain")
    devices = spec.get("devices") or []
    advanced = any(d.get("taints") or d.get("consumesCounters") for d in devices)
    limit = MAX_DEVICES_ADVANCED if advanced else MAX_DEVICES
    if len(devices) > limit:
        problems.append(f"{len(devices)} devices in one slice, at most {limit}")
    for device in devices:
        problems += device_problems(device)
    return problems


def check_slices(bodies: list[dict[str, Any]]) -> None:
    """Raise a one-line KvminfoError naming the first problem (and how many there are)."""
    problems = [p for body in bodies for p in slice_problems(body)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise KvminfoError(f"the API server would refuse this ResourceSlice: {problems[0]}{more}")
