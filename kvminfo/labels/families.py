"""Pure: the label families beyond Hyper-V: CPU models, host-model features,
confidential computing, TSC, limits. Plain facts in, fully qualified NFD
labels out (feature.node.kubernetes.io/kvm-info-...), every piece that came
from libvirt or the kernel passed through NFD's name/value rules: sanitized
with a warning, or dropped with a warning when nothing usable is left.

Families and labels (absent = unsupported or unknown; `probe` says which):
- cpu-models:          kvm-info-cpu-model-<Model>=true for each offered model
                       (kvminfo.features.cpu_models.offered_models)
- cpu-features:        kvm-info-cpu-feature-<feature>=true for each feature of the host
                       CPU (libvirt's baseline of the host-model, kvminfo.sources.cpu_baseline)
- host-model-features: kvm-info-host-model-requires-<feature>=true for each
                       <feature policy='require'> of the host model
- machine-types:       kvm-info-machine-type-<type>=true for each machine type of a KVM guest
                       of the host's architecture (kvminfo.sources.hostcaps)
- confidential:        kvm-info-sev, kvm-info-sev-es, kvm-info-sev-snp, kvm-info-tdx,
                       kvm-info-sgx (=true), kvm-info-sgx-epc-bytes=<bytes>
- tsc:                 kvm-info-tsc-frequency=<Hz>, kvm-info-tsc-scalable=true|false
- limits:              kvm-info-max-vcpus=<KVM_CAP_MAX_VCPUS>
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from kvminfo.labels.nfd import DEFAULT_PREFIX, MAX_NAME, sanitize_value
from kvminfo.model import Support

if TYPE_CHECKING:
    from typing import Any

    from kvminfo.features.family_facts import FamilyFacts, Verdict

PREFIX = f"{DEFAULT_PREFIX}/"
CPU_MODEL = "kvm-info-cpu-model-"
HOST_MODEL_REQUIRES = "kvm-info-host-model-requires-"
CPU_FEATURE = "kvm-info-cpu-feature-"
MACHINE_TYPE = "kvm-info-machine-type-"
CONFIDENTIAL = "kvm-info-"  # + sev, sev-es, sev-snp, tdx, sgx
SGX_EPC_BYTES = "kvm-info-sgx-epc-bytes"
TSC_FREQUENCY = "kvm-info-tsc-frequency"
TSC_SCALABLE = "kvm-info-tsc-scalable"
MAX_VCPUS = "kvm-info-max-vcpus"


def _named(stem: str, raw: str, warnings: list[str]) -> str | None:
    """stem + an outside name as a valid NFD name: sanitized (warned), or None (warned) when
    nothing usable is left or the whole name would pass 63 characters."""
    part = sanitize_value(raw)
    if part is None or len(stem) + len(part) > MAX_NAME:
        warnings.append(f"label {PREFIX}{stem}{raw!r}: dropped, not a valid NFD label name")
        return None
    if part != raw:
        warnings.append(f"label {PREFIX}{stem}{raw!r}: name sanitized to {part!r}")
    return f"{PREFIX}{stem}{part}"


def _flags(stem: str, names: Iterable[str], warnings: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for raw in names:
        key = _named(stem, raw, warnings)
        if key is None:
            continue
        if key in labels:
            warnings.append(f"label {key}: {raw!r} sanitizes to a name already used; kept once")
        labels[key] = "true"
    return labels


def cpu_model_labels(offered: Iterable[str], warnings: list[str]) -> dict[str, str]:
    return _flags(CPU_MODEL, offered, warnings)


def host_model_feature_labels(required: Iterable[str] | None, warnings: list[str]) -> dict[str, str]:
    return _flags(HOST_MODEL_REQUIRES, required or (), warnings)


def confidential_labels(verdicts: Iterable[Verdict], sgx: Mapping[str, Any] | None) -> dict[str, str]:
    """=true for each SUPPORTED verdict; the EPC size (bytes, an integer NodeFeatureRules can compare
    with Gt/Lt) when SGX is supported and libvirt gave a size."""
    labels = {f"{PREFIX}{CONFIDENTIAL}{v.name}": "true" for v in verdicts if v.support is Support.SUPPORTED}
    if f"{PREFIX}{CONFIDENTIAL}sgx" in labels and sgx and sgx.get("epc_bytes"):
        labels[f"{PREFIX}{SGX_EPC_BYTES}"] = str(int(sgx["epc_bytes"]))
    return labels


def tsc_labels(tsc: Mapping[str, Any] | None) -> dict[str, str]:
    if not tsc or not tsc.get("frequency_hz"):
        return {}
    labels = {f"{PREFIX}{TSC_FREQUENCY}": str(int(tsc["frequency_hz"]))}
    if tsc.get("scalable") is not None:
        labels[f"{PREFIX}{TSC_SCALABLE}"] = "true" if tsc["scalable"] else "false"
    return labels


def limit_labels(kvm_caps: Mapping[str, int] | None) -> dict[str, str]:
    """KVM_CAP_MAX_VCPUS, or KVM_CAP_NR_VCPUS when it is 0 (the kernel's api.rst: "If the
    KVM_CAP_MAX_VCPUS does not exist, you should assume that max_vcpus is same as ... NR_VCPUS")."""
    caps = kvm_caps or {}
    max_vcpus = caps.get("KVM_CAP_MAX_VCPUS") or caps.get("KVM_CAP_NR_VCPUS")
    return {f"{PREFIX}{MAX_VCPUS}": str(max_vcpus)} if max_vcpus and max_vcpus > 0 else {}


def family_labels(facts: FamilyFacts, families: Iterable[str], warnings: list[str]) -> dict[str, str]:
    """Candidate labels of the chosen families (caps and version are rendered elsewhere)."""
    wanted = set(families)
    labels: dict[str, str] = {}
    if "cpu-models" in wanted:
        labels.update(cpu_model_labels(facts.offered_models or (), warnings))
    if "cpu-features" in wanted:
        labels.update(_flags(CPU_FEATURE, facts.cpu_features or (), warnings))
    if "host-model-features" in wanted:
        labels.update(host_model_feature_labels(facts.required_features, warnings))
    if "machine-types" in wanted:
        labels.update(_flags(MACHINE_TYPE, facts.machine_types or (), warnings))
    if "confidential" in wanted:
        labels.update(confidential_labels(facts.confidential, facts.sgx))
    if "tsc" in wanted:
        labels.update(tsc_labels(facts.tsc))
    if "limits" in wanted and facts.max_vcpus:
        labels[f"{PREFIX}{MAX_VCPUS}"] = str(facts.max_vcpus)
    return labels
