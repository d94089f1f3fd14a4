"""A stand-in for kube-apiserver's resource.k8s.io API (ResourceSlices, ResourceClaims,
DeviceClass validation), on top of tests/apiserver_standin.py's server (its bearer
token, Status answers, fault injection and kubeconfig).

Rules written from the Kubernetes v1.36.2 sources as ../shared/corpus/dra/FACTS.md
summarises them (section 3, k8s.io/api/resource/v1/types.go and
pkg/apis/resource/validation/validation.go), never from the driver's code:
- discovery: GET /apis lists resource.k8s.io with the versions ``served`` (v1 since
  1.34, v1beta2 in 1.33, v1beta1 in 1.32); any other version's path is 404;
- ResourceSlice: spec.driver a DNS subdomain <= 63; spec.nodeName set; pool name
  <= 253 of '/'-separated DNS subdomains, generation >= 0, resourceSliceCount >= 1;
  at most 128 devices (64 with taints or counters); device names DNS labels, unique;
  at most 32 attributes and capacities per device and 48 attribute values; names
  ``[<domain>/]<ID>``, domain a DNS subdomain <= 63, ID a C identifier <= 32;
  exactly one of bool/int/string/version per value; strings and versions <= 64;
  versions semver 2.0.0; in v1beta1 each device's fields sit under ``basic``;
- field selectors on resourceslices: spec.nodeName, spec.driver, spec.pool.name
  (others 400, as the real registry's field label conversion refuses them);
- optimistic concurrency on update (409 when the resourceVersion is stale);
- ResourceClaims: GET of claims put with put_claim() (a claim's allocation is written
  by the scheduler; here by the test).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from apiserver_standin import _DNS_SUBDOMAIN, ApiServerStandin, _Answer

GROUP = "resource.k8s.io"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# semver.org's regular expression for SemVer 2.0.0
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
                     r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")
_SLICES = re.compile(rf"/apis/{re.escape(GROUP)}/(?P<v>[^/]+)/resourceslices(?:/(?P<name>[^/]+))?")
_CLAIM = re.compile(rf"/apis/{re.escape(GROUP)}/(?P<v>[^/]+)/namespaces/(?P<ns>[^/]+)/resourceclaims/(?P<name>[^/]+)")
_SLICE_FIELDS = {"spec.nodeName": ("nodeName",), "spec.driver": ("driver",), "spec.pool.name": ("pool", "name")}


def _subdomain(text: Any, limit: int = 253) -> bool:
    return isinstance(text, str) and 0 < len(text) <= limit and bool(_DNS_SUBDOMAIN.fullmatch(text))


def _qualified(name: str) -> str | None:
    domain, slash, ident = name.rpartition("/")
    if slash and not _subdomain(domain, 63):
        return f"{name}: domain must be a DNS subdomain of at most 63 characters"
    if not (0 < len(ident) <= 32 and _C_IDENTIFIER.fullmatch(ident)):
        return f"{name}: must be a C identifier of at most 32 characters"
    return None


def _value(name: str, value: Any) -> str | None:
    kinds = [k for k in ("bool", "int", "string", "version") if isinstance(value, dict) and k in value]
    if len(kinds) != 1 or set(value) != set(kinds):
        return f"attributes[{name}]: exactly one value must be specified"
    item = value[kinds[0]]
    if kinds[0] == "bool" and not isinstance(item, bool):
        return f"attributes[{name}].bool: must be a boolean"
    if kinds[0] == "int" and (isinstance(item, bool) or not isinstance(item, int)):
        return f"attributes[{name}].int: must be an integer"
    if kinds[0] in ("string", "version"):
        if not isinstance(item, str) or len(item) > 64:
            return f"attributes[{name}].{kinds[0]}: Too long: may not be more than 64 bytes"
        if kinds[0] == "version" and not _SEMVER.fullmatch(item):
            return f"attributes[{name}].version: must be a semantic version"
    return None


def slice_problems(body: dict[str, Any], version: str) -> list[str]:
    problems = []
    if body.get("apiVersion") != f"{GROUP}/{version}" or body.get("kind") != "ResourceSlice":
        problems.append(f"apiVersion/kind must be {GROUP}/{version} ResourceSlice")
    name = (body.get("metadata") or {}).get("name")
    if not _subdomain(name):
        problems.append(f"metadata.name: Invalid value: {name!r}")
    spec = body.get("spec") or {}
    if not _subdomain(spec.get("driver"), 63):
        problems.append(f"spec.driver: Invalid value: {spec.get('driver')!r}")
    if not spec.get("nodeName"):
        problems.append("spec.nodeName: Required value (the stand-in serves node-local slices only)")
    pool = spec.get("pool") or {}
    pool_name = pool.get("name")
    if not (isinstance(pool_name, str) and 0 < len(pool_name) <= 253 and all(_subdomain(p) for p in pool_name.split("/"))):
        problems.append(f"spec.pool.name: Invalid value: {pool_name!r}")
    if not isinstance(pool.get("generation"), int) or pool["generation"] < 0:
        problems.append("spec.pool.generation: must be greater than or equal to 0")
    if not isinstance(pool.get("resourceSliceCount"), int) or pool["resourceSliceCount"] < 1:
        problems.append("spec.pool.resourceSliceCount: must be greater than 0")
    devices = spec.get("devices") or []
    flat = [{"name": d.get("name"), **(d.get("basic") or {})} if version == "v1beta1" else d for d in devices]
    if version == "v1beta1" and any(set(d) - {"name", "basic"} for d in devices):
        problems.append("spec.devices: in v1beta1 a device's fields are under basic")
    limit = 64 if any(d.get("taints") or d.get("consumesCounters") for d in flat) else 128
    if len(flat) > limit:
        problems.append(f"spec.devices: Too many: {len(flat)}: must have at most {limit} items")
    names = [d.get("name") for d in flat]
    if len(set(names)) != len(names):
        problems.append("spec.devices: Duplicate value")
    for i, device in enumerate(flat):
        where = f"spec.devices[{i}]"
        if not (isinstance(device.get("name"), str) and len(device["name"]) <= 63 and _DNS_LABEL.fullmatch(device["name"])):
            problems.append(f"{where}.name: Invalid value: {device.get('name')!r}")
        attributes, capacity = device.get("attributes") or {}, device.get("capacity") or {}
        if len(attributes) + len(capacity) > 32:
            problems.append(f"{where}: Too many: {len(attributes) + len(capacity)}: must have at most 32 attributes and capacities")
        if sum(len(v.get("list", [])) if isinstance(v, dict) and "list" in v else 1 for v in attributes.values()) > 48:
            problems.append(f"{where}: Too many attribute values: must have at most 48")
        for key, value in attributes.items():
            problems += [f"{where}.{p}" for p in (_qualified(key), _value(key, value)) if p]
        for key in capacity:
            problems += [f"{where}.capacity.{p}" for p in (_qualified(key),) if p]
        if "allowMultipleAllocations" in device and not isinstance(device["allowMultipleAllocations"], bool):
            problems.append(f"{where}.allowMultipleAllocations: must be a boolean")
    return problems


def device_class_problems(body: dict[str, Any]) -> list[str]:
    """DeviceClass (resource.k8s.io/v1): a DNS subdomain name, CEL selectors with an
    expression, extendedResourceName an extended resource name (a domain that is not
    kubernetes.io, '/', a name part; pkg/apis/resource/validation ValidateDeviceClass)."""
    problems = []
    if body.get("apiVersion") != f"{GROUP}/v1" or body.get("kind") != "DeviceClass":
        problems.append("apiVersion/kind must be resource.k8s.io/v1 DeviceClass")
    if not _subdomain((body.get("metadata") or {}).get("name")):
        problems.append("metadata.name: Invalid value")
    spec = body.get("spec") or {}
    for i, selector in enumerate(spec.get("selectors") or []):
        if not isinstance(selector, dict) or set(selector) != {"cel"} or not (selector["cel"] or {}).get("expression"):
            problems.append(f"spec.selectors[{i}]: exactly one cel selector with an expression")
    ext = spec.get("extendedResourceName")
    if ext is not None:
        domain, slash, name = ext.partition("/")
        if (not slash or "kubernetes.io" in domain or not _subdomain(domain)
                or not re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", name) or len(name) > 63):
            problems.append(f"spec.extendedResourceName: Invalid value: {ext!r}")
    if set(spec) - {"selectors", "config", "extendedResourceName"}:
        problems.append(f"spec: unknown fields {sorted(set(spec) - {'selectors', 'config', 'extendedResourceName'})}")
    return problems


def _to_v1(body: dict[str, Any], version: str) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    body["apiVersion"] = f"{GROUP}/v1"
    if version == "v1beta1":
        body["spec"]["devices"] = [{"name": d["name"], **(d.get("basic") or {})} for d in body["spec"].get("devices") or []]
    return body


def _from_v1(body: dict[str, Any], version: str) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    body["apiVersion"] = f"{GROUP}/{version}"
    if version == "v1beta1":
        body["spec"]["devices"] = [{"name": d["name"], "basic": {k: v for k, v in d.items() if k != "name"}}
                                   for d in body["spec"].get("devices") or []]
    return body


@dataclass
class DraApiServerStandin(ApiServerStandin):
    served: tuple[str, ...] = ("v1", "v1beta2", "v1beta1")
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> slice, held as v1
    claims: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    down: bool = False  # every request 503, as an API server that is restarting
    # DRAConsumableCapacity (FACTS.md section 4): beta and on in 1.36, alpha and off before; a
    # disabled gate's field is dropped from what is stored (the registry strategy's
    # dropDisabledFields), and before 1.34 (no v1) the field does not exist: strict decoding refuses it.
    consumable_capacity: bool = True

    def put_claim(self, claim: dict[str, Any]) -> None:
        with self._lock:
            meta = claim["metadata"]
            self.claims[(meta["namespace"], meta["name"])] = json.loads(json.dumps(claim))

    def wipe(self, node: str, driver: str = "") -> None:
        """What the kubelet's DeleteCollection (fieldSelector spec.nodeName[,spec.driver]) does."""
        with self._lock:
            for name in [n for n, s in self.slices.items()
                         if s["spec"]["nodeName"] == node and (not driver or s["spec"]["driver"] == driver)]:
                del self.slices[name]

    def pool(self, node: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(s)) for s in self.slices.values() if s["spec"]["nodeName"] == node]

    def _handle(self, verb: str, path: str, query: dict[str, str], headers: Any,
                raw: bytes) -> tuple[int, dict[str, Any], str | None]:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.token:
            raise _Answer(401, "Unauthorized")
        if self.down:
            raise _Answer(503, "the server is currently unable to handle the request")
        fault = next((f for f in self._faults if verb in f.verbs), None)
        if fault is not None:
            self._faults.remove(fault)
            raise _Answer(fault.status, fault.message)
        if path.rstrip("/") == "/apis" and verb == "GET":
            versions = [{"groupVersion": f"{GROUP}/{v}", "version": v} for v in self.served]
            groups = [{"name": GROUP, "versions": versions, "preferredVersion": versions[0]}] if versions else []
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}, None
        if (claim := _CLAIM.fullmatch(path)) is not None and claim["v"] in self.served:
            if verb != "GET":
                raise _Answer(405, f"{verb} on resourceclaims is not served by the stand-in")
            found = self.claims.get((claim["ns"], claim["name"]))
            if found is None:
                raise _Answer(404, f'resourceclaims.{GROUP} "{claim["name"]}" not found',
                              {"name": claim["name"], "group": GROUP, "kind": "resourceclaims"})
            return 200, found, None
        match = _SLICES.fullmatch(path)
        if match is None or match["v"] not in self.served:
            raise _Answer(404, "the server could not find the requested resource")
        version, name = match["v"], match["name"]
        if verb == "GET" and not name:
            return 200, self._list(version, query), None
        if verb == "GET":
            return 200, _from_v1(self._slice(name), version), None
        if verb == "DELETE" and name:
            self._slice(name)
            return 200, _from_v1(self.slices.pop(name), version), None
        if verb in ("POST", "PUT"):
            body = self._slice_body(headers, raw, version)
            carried = body["metadata"].get("resourceVersion")
            if verb == "POST" and not name:
                if carried:
                    raise _Answer(422, "metadata.resourceVersion: Invalid value: must be empty on create")
                if body["metadata"]["name"] in self.slices:
                    raise _Answer(409, f'resourceslices.{GROUP} "{body["metadata"]["name"]}" already exists')
                return 201, _from_v1(self._store_slice(body, None), version), carried
            if verb == "PUT" and name:
                current = self._slice(name)
                if body["metadata"]["name"] != name:
                    raise _Answer(400, "the name of the object does not match the name on the URL")
                if carried != current["metadata"]["resourceVersion"]:
                    raise _Answer(409, f'Operation cannot be fulfilled on resourceslices.{GROUP} "{name}": the '
                                       "object has been modified; please apply your changes to the latest version")
                return 200, _from_v1(self._store_slice(body, current), version), carried
        raise _Answer(405, f"{verb} is not supported on {path}")

    def _list(self, version: str, query: dict[str, str]) -> dict[str, Any]:
        wanted = []
        for term in filter(None, (query.get("fieldSelector") or "").split(",")):
            key, _, value = term.partition("=")
            if key not in _SLICE_FIELDS:
                raise _Answer(400, f'field label not supported: {key}')
            wanted.append((_SLICE_FIELDS[key], value))

        def matches(body: dict[str, Any]) -> bool:
            for fields, value in wanted:
                item: Any = body["spec"]
                for f in fields:
                    item = (item or {}).get(f)
                if item != value:
                    return False
            return True

        items = [_from_v1(s, version) for s in self.slices.values() if matches(s)]
        return {"kind": "ResourceSliceList", "apiVersion": f"{GROUP}/{version}",
                "metadata": {"resourceVersion": str(self._next_rv)}, "items": items}

    def _slice(self, name: str) -> dict[str, Any]:
        if name not in self.slices:
            raise _Answer(404, f'resourceslices.{GROUP} "{name}" not found',
                          {"name": name, "group": GROUP, "kind": "resourceslices"})
        return self.slices[name]

    def _slice_body(self, headers: Any, raw: bytes, version: str) -> dict[str, Any]:
        if (headers.get("Content-Type") or "application/json").split(";")[0].strip() != "application/json":
            raise _Answer(415, "only application/json bodies are accepted by the stand-in")
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise _Answer(400, f"body is not JSON: {err}") from None
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise _Answer(422, "metadata: Required value")
        if "v1" not in self.served:
            for i, device in enumerate((body.get("spec") or {}).get("devices") or []):
                fields = device.get("basic", {}) if version == "v1beta1" else device
                if "allowMultipleAllocations" in fields:
                    raise _Answer(400, f'strict decoding error: unknown field "spec.devices[{i}].'
                                       f'{"basic." if version == "v1beta1" else ""}allowMultipleAllocations"')
        problems = slice_problems(body, version)
        if problems:
            raise _Answer(422, f"ResourceSlice.{GROUP} {body['metadata'].get('name')!r} is invalid: " + "; ".join(problems))
        return _to_v1(body, version)

    def _store_slice(self, body: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        if not self.consumable_capacity:
            for device in body["spec"].get("devices") or []:
                device.pop("allowMultipleAllocations", None)
        meta = body["metadata"]
        meta["uid"] = previous["metadata"]["uid"] if previous else f"uid-{self._next_rv}"
        self._bump(body)
        self.slices[meta["name"]] = body
        return body


