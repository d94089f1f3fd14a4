"""Pure: source results -> the facts of the label families beyond Hyper-V, each with why it is absent.

One FamilyFacts per collect(): the labels (kvminfo.labels.families), the
NodeFeature sets (kvminfo.output.nodefeature) and `kvminfo probe` all read it,
so the three outputs cannot disagree. Rules: kvminfo.features.cpu_models,
.confidential, .tsc.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kvminfo.features.confidential import confidential_verdicts
from kvminfo.features.cpu_models import DEFAULT_OBSOLETE_CPU_MODELS, host_model_obsolete, offered_models
from kvminfo.features.family_facts import FamilyFacts
from kvminfo.features.tsc import tsc_info
from kvminfo.model import SourceResult, Status, source_named
from kvminfo.sources.facts import KVM, LIBVIRT, KvmFacts
from kvminfo.sources.libvirt_facts import DomainCapabilities, LibvirtFacts


def left_out_text(models: Mapping[str, str]) -> str:
    """'why: a, b; why: c' for usable models that get no label, grouped by the reason."""
    by_reason: dict[str, list[str]] = {}
    for model, why in models.items():
        by_reason.setdefault(why, []).append(model)
    return "; ".join(f"{why}: {', '.join(names)}" for why, names in by_reason.items())


def _why_not(source: SourceResult | None, name: str) -> str:
    if source is None:
        return f"{name} not asked"
    if source.status is Status.DISABLED:
        return f"{name} switched off ({source.reason})"
    return f"{name} {source.status.value}: {source.reason}"


def family_facts(sources: Iterable[SourceResult], obsolete: frozenset[str] | None = None) -> FamilyFacts:
    """Everything the families need from the kvm and libvirt results; ``obsolete`` None = KubeVirt's list."""
    results = tuple(sources)
    kvm, libvirt = source_named(results, KVM), source_named(results, LIBVIRT)
    kvm_facts = kvm.facts if kvm is not None and kvm.ok and isinstance(kvm.facts, KvmFacts) else None
    lv_facts = libvirt.facts if libvirt is not None and libvirt.ok and isinstance(libvirt.facts, LibvirtFacts) \
        else None
    domcaps: DomainCapabilities | None = lv_facts.domcaps if lv_facts is not None else None
    absent: dict[str, str] = {}
    if kvm is not None and kvm.status is not Status.DISABLED and kvm_facts is None:
        why = f"no usable KVM ({_why_not(kvm, KVM)}): no VM can run here"
        return FamilyFacts(absent={f: why for f in ("cpu-models", "cpu-features", "host-model-features",
                                                      "machine-types", "confidential", "tsc", "limits")})
    obsolete = DEFAULT_OBSOLETE_CPU_MODELS if obsolete is None else obsolete
    offered, left_out = (None, {}) if domcaps is None else offered_models(domcaps.cpu_models, obsolete)
    host_model = domcaps.host_model.model if domcaps is not None and domcaps.host_model else None
    required = domcaps.host_model_required_features if domcaps is not None else None
    conf = domcaps.confidential if domcaps is not None else None
    params = kvm_facts.module_params if kvm_facts is not None else None
    caps = kvm_facts.caps if kvm_facts is not None else None
    host_caps = lv_facts.host_capabilities if lv_facts is not None else None
    tsc = tsc_info(lv_facts.tsc_counter if lv_facts is not None else None,
                   kvm_facts.tsc_khz if kvm_facts is not None else None, caps,
                   host_caps_answered=host_caps is not None,
                   invariant=kvm_facts.invariant_tsc if kvm_facts is not None else None,
                   invariant_said=kvm_facts.invariant_tsc_said if kvm_facts is not None else None)
    max_vcpus = (caps or {}).get("KVM_CAP_MAX_VCPUS") or (caps or {}).get("KVM_CAP_NR_VCPUS") or None
    if domcaps is None:
        why = _why_not(libvirt, LIBVIRT)
        absent.update({"cpu-models": why, "host-model-features": why, "confidential": why})
    else:
        if not offered:
            absent["cpu-models"] = ("libvirt offers no named CPU model (no supported custom mode)"
                                    if domcaps.cpu_models is None else
                                    "libvirt marks no model usable" if not left_out else
                                    f"every model libvirt marks usable is left out: {left_out_text(left_out)}")
        if not required:
            absent["host-model-features"] = ("libvirt has no supported host-model" if required is None
                                             else "the host model requires no extra feature")
    if tsc is None:
        absent["tsc"] = _tsc_absent(libvirt, lv_facts, kvm, kvm_facts)
    cpu_features = lv_facts.cpu_features if lv_facts is not None else None
    if not cpu_features:
        absent["cpu-features"] = (_why_not(libvirt, LIBVIRT) if lv_facts is None else
                                  lv_facts.cpu_features_missing or "libvirt's CPU baseline lists no required feature")
    machine_types = host_caps.machine_types if host_caps is not None else None
    if not machine_types:
        absent["machine-types"] = (
            _why_not(libvirt, LIBVIRT) if lv_facts is None else
            (_no_host_caps(lv_facts) if host_caps is None else
             f"no <guest> of host architecture {host_caps.arch or '(unknown)'} offers <domain type='kvm'>"))
    if max_vcpus is None:
        absent["limits"] = _why_not(kvm, KVM) if kvm_facts is None else "KVM reports no vCPU limit"
    return FamilyFacts(offered_models=None if offered is None else tuple(offered), left_out_models=left_out,
                       host_model=host_model, host_model_obsolete=host_model_obsolete(host_model, obsolete),
                       required_features=None if required is None else tuple(required),
                       confidential=confidential_verdicts(conf, params),
                       sgx=(conf or {}).get("sgx"), sev=(conf or {}).get("sev"), tsc=tsc, max_vcpus=max_vcpus,
                       cpu_features=cpu_features, machine_types=machine_types, absent=absent)


def _tsc_absent(libvirt: SourceResult | None, lv_facts: LibvirtFacts | None, kvm: SourceResult | None,
                kvm_facts: KvmFacts | None) -> str:
    """Why no TSC frequency is published (kvminfo.features.tsc: invariant TSC only)."""
    if lv_facts is not None and lv_facts.host_capabilities is not None:
        return ("libvirt's host capabilities have no <counter name='tsc'>: libvirt reports a TSC frequency only "
                "for an invariant TSC (src/cpu/cpu_x86.c), so there is none to trust here")
    from_libvirt = _why_not(libvirt, LIBVIRT) if lv_facts is None else _no_host_caps(lv_facts)
    if kvm_facts is None:
        from_kvm = _why_not(kvm, KVM)
    elif kvm_facts.invariant_tsc is False:
        from_kvm = f"the host TSC is not invariant: {kvm_facts.invariant_tsc_said}"
    elif kvm_facts.invariant_tsc is None:
        from_kvm = f"cannot tell whether the host TSC is invariant: {kvm_facts.invariant_tsc_said or 'not asked'}"
    else:
        from_kvm = kvm_facts.tsc_missing or "not asked"
    return f"no TSC frequency: libvirt: {from_libvirt}; KVM: {from_kvm}"


def _no_host_caps(lv_facts: LibvirtFacts) -> str:
    if lv_facts.replayed_from is not None:
        return "no host capabilities: a replay without --hostcaps-xml"
    return "no host capabilities: not asked (no family needs them), or not valid XML (see the warning)"
