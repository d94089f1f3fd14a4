"""Pure: a Report -> the NodeFeature object NFD's master reads (nfd.k8s-sigs.io/v1alpha1).

The API edge that writes it (and the NodeFeature Output) is
kvminfo.output.nodefeature_client, the only module importing `kubernetes`.

spec.labels carries exactly what `kvminfo labels` prints; spec.features carries
the raw facts in NFD's Features format so that a NodeFeatureRule can derive
its own labels from them:
- flags      kvminfo.hyperv   one element per supported Hyper-V enlightenment
- attributes kvminfo.<source> what each source that answered gives (Source.attributes):
  kvminfo.kvm      usable, api_version, max_vcpus, nested, cpu_vendor
  kvminfo.libvirt  version, max_vcpus, host_model, sev, sgx, tdx, ...
- for the label families asked for (kvminfo/labels/__init__.py), the same facts as the labels:
  flags      kvminfo.cpu_models          one element per offered CPU model (cpu-models)
  flags      kvminfo.cpu_features        one element per host CPU feature (cpu-features)
  flags      kvminfo.host_model_features one element per required host-model feature
  flags      kvminfo.machine_types       one element per KVM machine type (machine-types)
  attributes kvminfo.confidential        sev, sev_es, sev_snp, tdx, sgx: "true"/"false" (left out
                                         when unknown); sgx_epc_bytes, sev_max_guests, sev_max_es_guests
  attributes kvminfo.tsc                 frequency_hz, scalable ("true"/"false"), said_by
Only sources that answered contribute; an absent element means "not known".

metadata.ownerReferences names the publisher pod's controller (its
DaemonSet) when known, so that deleting the DaemonSet lets Kubernetes'
garbage collector delete the object too (Kubernetes "Owners and Dependents":
a namespaced dependent's owner must be in its namespace, which the
publisher's DaemonSet is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvminfo.common.errors import ParseError
from kvminfo.common.k8snames import DNS_SUBDOMAIN_MAX, is_dns_label, is_dns_subdomain
from kvminfo.features.family_facts import FamilyFacts
from kvminfo.model import Report, Support
from kvminfo.output.base import labels_changed
from kvminfo.sources.facts import KVM, LIBVIRT

API_GROUP = "nfd.k8s-sigs.io"
API_VERSION = "v1alpha1"
KIND = "NodeFeature"
PLURAL = "nodefeatures"
# NFD's master attributes a NodeFeature to the node named by this label.
NODE_NAME_LABEL = "nfd.node.kubernetes.io/node-name"
NAME_PREFIX = "kvminfo-"

HYPERV_FLAGS = "kvminfo.hyperv"
ATTRIBUTES_PREFIX = "kvminfo."  # + the source's name
KVM_ATTRIBUTES = ATTRIBUTES_PREFIX + KVM
LIBVIRT_ATTRIBUTES = ATTRIBUTES_PREFIX + LIBVIRT


class KubernetesNameError(ParseError):
    """A node, namespace or object name Kubernetes would refuse."""


def check_node_name(node: str) -> str:
    """A node name (RFC 1123 subdomain, what Kubernetes requires of node and object names)."""
    if not is_dns_subdomain(node):
        raise KubernetesNameError(f"node name {node!r} is not a valid Kubernetes node name "
                           "(lowercase RFC 1123 subdomain, at most 253 characters)")
    return node


def check_namespace(namespace: str) -> str:
    """A namespace name (RFC 1123 label)."""
    if not is_dns_label(namespace):
        raise KubernetesNameError(f"namespace {namespace!r} is not a valid namespace name "
                           "(lowercase RFC 1123 label, at most 63 characters)")
    return namespace


def object_name(node: str) -> str:
    """kvminfo-<node>: one object per node, distinct from NFD's own (named after the node)."""
    name = NAME_PREFIX + check_node_name(node)
    if len(name) > DNS_SUBDOMAIN_MAX:
        raise KubernetesNameError(f"node name {node!r} is too long: {name!r} exceeds {DNS_SUBDOMAIN_MAX} characters")
    return name


def _flag_set(names: list[str]) -> dict[str, Any]:
    return {"elements": {name: {} for name in sorted(names)}}


def _attribute_set(values: Mapping[str, object]) -> dict[str, Any]:
    """NFD attributes are strings; booleans become "true"/"false" like NFD's own sources."""
    def text(value: object) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    return {"elements": {key: text(value) for key, value in sorted(values.items()) if value is not None}}


CPU_MODEL_FLAGS = "kvminfo.cpu_models"
HOST_MODEL_FEATURE_FLAGS = "kvminfo.host_model_features"
CPU_FEATURE_FLAGS = "kvminfo.cpu_features"
MACHINE_TYPE_FLAGS = "kvminfo.machine_types"
CONFIDENTIAL_ATTRIBUTES = "kvminfo.confidential"
TSC_ATTRIBUTES = "kvminfo.tsc"

# Every feature set spec.features may hold: (NFD set kind, name, what it holds). `publish --help`
# is made from this table; features_from_report writes only these names (tests check both).
PUBLISHED_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("flags", HYPERV_FLAGS, "supported Hyper-V enlightenments"),
    ("attributes", KVM_ATTRIBUTES, "usable, api_version, max_vcpus, nested, cpu_vendor"),
    ("attributes", LIBVIRT_ATTRIBUTES, "version, max_vcpus, host_model, sev, sgx, tdx, ..."),
    ("flags", CPU_MODEL_FLAGS, "offered CPU models (--family cpu-models)"),
    ("flags", CPU_FEATURE_FLAGS, "host CPU features (--family cpu-features)"),
    ("flags", HOST_MODEL_FEATURE_FLAGS, "host-model's required features (--family host-model-features)"),
    ("flags", MACHINE_TYPE_FLAGS, "KVM machine types (--family machine-types)"),
    ("attributes", CONFIDENTIAL_ATTRIBUTES, "sev, sev_es, sev_snp, tdx, sgx, ... (--family confidential)"),
    ("attributes", TSC_ATTRIBUTES, "frequency_hz, scalable, said_by (--family tsc)"),
)


def published_features_text(indent: str = "  ") -> str:
    """PUBLISHED_FEATURES as aligned lines for --help: "<indent>flags      kvminfo.hyperv  ..."."""
    width = max(len(name) for _, name, _ in PUBLISHED_FEATURES)
    return "\n".join(f"{indent}{kind:<10} {name:<{width}}  {what}" for kind, name, what in PUBLISHED_FEATURES)


def _names_after(labels: Mapping[str, str], stem: str) -> list[str]:
    """The (already NFD-checked) names of one family's flag labels: what follows ``stem``."""
    return [key.split("/", 1)[-1].removeprefix(stem) for key in labels if key.split("/", 1)[-1].startswith(stem)]


def _family_sets(report: Report) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flags, attributes) of the families beyond caps/version that this report was rendered for."""
    facts, wanted = report.families, set(report.rendered_families)
    flags: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    if not isinstance(facts, FamilyFacts):
        return flags, attributes
    for family, name, stem in (("cpu-models", CPU_MODEL_FLAGS, "kvm-info-cpu-model-"),
                               ("cpu-features", CPU_FEATURE_FLAGS, "kvm-info-cpu-feature-"),
                               ("host-model-features", HOST_MODEL_FEATURE_FLAGS, "kvm-info-host-model-requires-"),
                               ("machine-types", MACHINE_TYPE_FLAGS, "kvm-info-machine-type-")):
        if family in wanted and (names := _names_after(report.labels, stem)):
            flags[name] = _flag_set(names)
    if "confidential" in wanted:
        conf: dict[str, object] = {v.name.replace("-", "_"): v.support is Support.SUPPORTED
                                   for v in facts.confidential if v.support is not Support.UNKNOWN}
        if conf.get("sgx") and facts.sgx:
            conf["sgx_epc_bytes"] = facts.sgx.get("epc_bytes")
        if conf.get("sev") and facts.sev:
            conf["sev_max_guests"] = facts.sev.get("max_guests")
            conf["sev_max_es_guests"] = facts.sev.get("max_es_guests")
        if conf:
            attributes[CONFIDENTIAL_ATTRIBUTES] = _attribute_set(conf)
    if "tsc" in wanted and facts.tsc is not None:
        attributes[TSC_ATTRIBUTES] = _attribute_set({"frequency_hz": facts.tsc.get("frequency_hz"),
                                                     "scalable": facts.tsc.get("scalable"),
                                                     "said_by": facts.tsc.get("said_by")})
    return flags, attributes


def features_from_report(report: Report) -> dict[str, Any]:
    """NFD's Features shape: {flags: {set: {elements}}, attributes: {...}}; empty sets left out."""
    supported = [v.name for v in report.features if v.support is Support.SUPPORTED]
    flags = {HYPERV_FLAGS: _flag_set(supported)} if supported else {}
    attributes: dict[str, Any] = {ATTRIBUTES_PREFIX + name: _attribute_set(values)
                                  for name, values in report.attributes.items()}
    family_flags, family_attributes = _family_sets(report)
    flags.update(family_flags)
    attributes.update(family_attributes)
    features: dict[str, Any] = {}
    if flags:
        features["flags"] = flags
    if attributes:
        features["attributes"] = attributes
    return features


def owner_reference(pod: Mapping[str, Any]) -> dict[str, str] | None:
    """The owner reference to put on our NodeFeature, from our own Pod object: its
    controller (metadata.ownerReferences[] with controller: true; a DaemonSet
    pod has exactly one), or None for a pod no controller manages.

    Only apiVersion, kind, name and uid are kept (what the API server requires
    of a reference: apimachinery's ValidateOwnerReferences). controller is not
    claimed (the DaemonSet does not manage this object) and blockOwnerDeletion
    is not set: setting it needs permission on the owner's finalizers under
    the OwnerReferencesPermissionEnforcement admission plugin, and an
    uninstall needs no foreground deletion.
    """
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            owner = {key: ref.get(key) for key in ("apiVersion", "kind", "name", "uid")}
            if all(isinstance(value, str) and value for value in owner.values()):
                return owner  # type: ignore[return-value]
    return None


def build_nodefeature(report: Report, node: str, namespace: str,
                      owner: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The whole object to create; the API server adds resourceVersion and the rest of metadata.
    ``owner``: an owner reference (owner_reference()) or None."""
    metadata: dict[str, Any] = {
        "name": object_name(node),
        "namespace": check_namespace(namespace),
        "labels": {NODE_NAME_LABEL: node},
    }
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "labels": dict(sorted(report.labels.items())),
            "features": features_from_report(report),
        },
    }


def _normalized_spec(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The API server may drop empty maps; {} and absent mean the same to NFD."""
    spec = dict(spec or {})
    features = {kind: sets for kind, sets in (spec.get("features") or {}).items() if sets}
    return {"labels": dict(spec.get("labels") or {}), "features": features}


def change_reason(existing: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> str | None:
    """Why `existing` must be written to become `desired`, or None when it already says the same.

    Only what we own counts: the spec and our labels. Metadata the API server or
    others add (resourceVersion, managedFields, annotations, extra labels) does not.
    """
    old, new = _normalized_spec((existing or {}).get("spec")), _normalized_spec(desired.get("spec"))
    changed = labels_changed(old["labels"] if existing is not None else None, new["labels"], "NodeFeature object")
    if changed is not None or existing is None:
        return changed
    if old["features"] != new["features"]:
        return "features changed"
    have = (existing.get("metadata") or {}).get("labels") or {}
    for key, value in desired["metadata"]["labels"].items():
        if have.get(key) != value:
            return f"object label {key} is {have.get(key)!r}, want {value!r}"
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    for ref in desired["metadata"].get("ownerReferences", []):
        if not any(isinstance(o, Mapping) and o.get("uid") == ref["uid"] for o in owners):
            return f"no owner reference to {ref['kind']} {ref['name']} (uid {ref['uid']})"
    return None


def updated_object(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` carrying `existing`'s resourceVersion (optimistic concurrency: a
    concurrent writer makes the server answer 409) and keeping labels and
    annotations others put on the object."""
    old_meta = existing.get("metadata") or {}
    meta = dict(desired["metadata"])
    meta["resourceVersion"] = old_meta.get("resourceVersion")
    meta["labels"] = {**(old_meta.get("labels") or {}), **desired["metadata"]["labels"]}
    if old_meta.get("annotations"):
        meta["annotations"] = dict(old_meta["annotations"])
    # Owners others added stay; ours replaces a reference to an earlier object of the
    # same kind and name (a DaemonSet deleted and re-created has a new uid).
    ours = desired["metadata"].get("ownerReferences", [])
    kept = [o for o in old_meta.get("ownerReferences") or [] if isinstance(o, Mapping)
            and not any((o.get("apiVersion"), o.get("kind"), o.get("name")) == (r["apiVersion"], r["kind"], r["name"])
                        for r in ours)]
    if kept or ours:
        meta["ownerReferences"] = kept + [dict(r) for r in ours]
    return {**desired, "metadata": meta}
