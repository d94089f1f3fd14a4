"""Plain data of the label families beyond Hyper-V: a confidential-computing Verdict and the
FamilyFacts that one collect() computes (kvminfo.features.families.family_facts) and the labels,
the NodeFeature and `kvminfo probe` read. They belong to the family rules (kvminfo/features/),
not to the layers' shared model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvminfo.model import Support

if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class Verdict:
    """One confidential-computing verdict (kvminfo.features.confidential) with its reason."""

    name: str
    support: Support
    reason: str


@dataclass(frozen=True)
class FamilyFacts:
    """offered_models: names to label (None: libvirt gave no answer); left_out_models: usable model ->
    why not labelled; required_features: host-model <feature policy='require'> names (None: no
    host-model); confidential: one verdict per kvminfo.features.confidential.NAMES; sgx: the SGX
    fact (EPC size); sev: the SEV fact (guest counts); tsc: kvminfo.features.tsc.tsc_info; max_vcpus: KVM_CAP_MAX_VCPUS (else NR_VCPUS).
    absent: family -> why it gives no label at all (a source off, down, or silent)."""

    offered_models: tuple[str, ...] | None = None
    left_out_models: Mapping[str, str] = field(default_factory=dict)
    host_model: str | None = None
    host_model_obsolete: bool = False
    required_features: tuple[str, ...] | None = None
    confidential: tuple[Verdict, ...] = ()
    sgx: Mapping[str, Any] | None = None
    sev: Mapping[str, Any] | None = None
    tsc: Mapping[str, Any] | None = None
    max_vcpus: int | None = None
    # cpu_features: the host CPU's features (libvirt's baseline of the host-model, KubeVirt's cpu-feature
    # labels; None: not had); machine_types: KVM machine types of the host's architecture (None: no host
    # capabilities).
    cpu_features: tuple[str, ...] | None = None
    machine_types: tuple[str, ...] | None = None
    absent: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"offered_models": None if self.offered_models is None else list(self.offered_models),
                "left_out_models": dict(self.left_out_models), "host_model": self.host_model,
                "host_model_obsolete": self.host_model_obsolete,
                "required_features": None if self.required_features is None else list(self.required_features),
                "confidential": [{"name": v.name, "support": v.support.value, "reason": v.reason}
                                 for v in self.confidential],
                "sgx": None if self.sgx is None else dict(self.sgx),
                "sev": None if self.sev is None else dict(self.sev),
                "tsc": None if self.tsc is None else dict(self.tsc),
                "max_vcpus": self.max_vcpus,
                "cpu_features": None if self.cpu_features is None else list(self.cpu_features),
                "machine_types": None if self.machine_types is None else list(self.machine_types),
                "absent": dict(self.absent)}
