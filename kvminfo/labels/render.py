"""Pure: source results + feature verdicts -> validated NFD labels.

Label families (a hook may print one family only):
- "caps": what this node's KVM can do: kvm-info-cap-hyperv-<feature>=true for
  every supported enlightenment (or hyperv.node.kubevirt.io/<feature> with
  KubeVirt's names), and general labels kvm-info-usable, kvm-info-nested,
  kvm-info-cpu-vendor, kvm-info-host-model. Absent means unsupported/unknown.
- "version": kvm-info-version-<feature>=true from the kernel whitelist.
- "cpu-models", "host-model-features", "confidential", "tsc", "limits":
  kvminfo/labels/families.py (fully qualified keys), from
  kvminfo.features.families.FamilyFacts.
Every key is fully qualified (feature.node.kubernetes.io/kvm-info-...): NFD
puts an unprefixed name under that namespace only while it still
auto-prefixes (deprecated; NFD 0.16+ with the DisableAutoPrefix feature gate
publishes it bare), and every NFD from 0.10 on accepts the qualified key as
the same node label, so consumers of the old unprefixed form see no change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvminfo.labels import FAMILIES
from kvminfo.labels.families import family_labels
from kvminfo.labels.nfd import DEFAULT_PREFIX, LabelError, check_label, full_key, sanitize_value
from kvminfo.model import FeatureVerdict, SourceResult, Status, Support
from kvminfo.sources.facts import KERNEL_WHITELIST, KVM, LIBVIRT, KvmFacts

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from kvminfo.features.family_facts import FamilyFacts

NS = f"{DEFAULT_PREFIX}/"
CAP_PREFIX = f"{NS}kvm-info-cap-hyperv-"
KUBEVIRT_HYPERV_PREFIX = "hyperv.node.kubevirt.io/"
VERSION_PREFIX = f"{NS}kvm-info-version-"
USABLE, NESTED, CPU_VENDOR, HOST_MODEL = (f"{NS}kvm-info-{name}" for name in ("usable", "nested", "cpu-vendor",
                                                                               "host-model"))


def _by_name(sources: Iterable[SourceResult]) -> dict[str, SourceResult]:
    return {s.name: s for s in sources}


def _outside_value(key: str, raw: object, warnings: list[str], once: bool = False) -> str | None:
    """A value that came from outside (libvirt, /proc): sanitized, or dropped, with a warning.
    ``once``: warn about this key and value once per process (_WARNED_ONCE), not every round."""
    text = str(raw)
    value = sanitize_value(text)
    if once and value != text:
        if (key, text) in _WARNED_ONCE:
            return value
        _WARNED_ONCE.add((key, text))
    if value is None:
        warnings.append(f"label {key}: dropped unusable value {text!r}")
    elif value != text:
        warnings.append(f"label {key}: value {text!r} sanitized to {value!r}")
    return value


# (label key, raw value) already warned about: the host's CPU vendor does not change while we run,
# so a `features-file --interval` or `publish` loop says it once, not every round.
_WARNED_ONCE: set[tuple[str, str]] = set()
# KubeVirt's cpu-vendor for an s390x host-model, where libvirt writes no <vendor>
# (pkg/virt-handler/node-labeller/s390x.go defaultVendor: "there is only one company selling them").
S390X_VENDOR = "IBM"


def _libvirt_vendor(host_model: Any, arch: str | None) -> str | None:
    """The CPU vendor KubeVirt labels: libvirt's host-model <vendor>, IBM on s390x without one."""
    if host_model is None:
        return None
    return host_model.vendor or (S390X_VENDOR if arch == "s390x" else None)


def caps_labels(sources: Mapping[str, SourceResult], verdicts: Iterable[FeatureVerdict],
                kubevirt_names: bool, warnings: list[str]) -> dict[str, str]:
    kvm = sources.get(KVM)
    if kvm is not None and kvm.status is not Status.DISABLED and not kvm.ok:
        # No usable /dev/kvm: no VM can run here, whatever libvirt claims.
        return {}
    prefix = KUBEVIRT_HYPERV_PREFIX if kubevirt_names else CAP_PREFIX
    labels = {f"{prefix}{v.name}": "true" for v in verdicts if v.support is Support.SUPPORTED}
    raw_vendor = None
    if kvm is not None and kvm.ok and isinstance(kvm.facts, KvmFacts):
        labels[USABLE] = "true"
        if kvm.facts.nested:
            labels[NESTED] = "true"
        raw_vendor = kvm.facts.cpu_vendor
    libvirt = sources.get(LIBVIRT)
    host_model = None
    if libvirt is not None and libvirt.ok:
        from kvminfo.sources.libvirt_facts import LibvirtFacts  # loaded already: the source ran

        if isinstance(libvirt.facts, LibvirtFacts) and libvirt.facts.domcaps is not None:
            host_model = libvirt.facts.domcaps.host_model
            # libvirt's word where it answers: the value KubeVirt's cpu-vendor label carries
            raw_vendor = _libvirt_vendor(host_model, libvirt.facts.domcaps.arch) or raw_vendor
    if raw_vendor:
        vendor = _outside_value(CPU_VENDOR, raw_vendor, warnings, once=True)
        if vendor:
            labels[CPU_VENDOR] = vendor
    if host_model is not None and host_model.model:
        model = _outside_value(HOST_MODEL, host_model.model, warnings)
        if model:
            labels[HOST_MODEL] = model
    return labels


def version_labels(sources: Mapping[str, SourceResult]) -> dict[str, str]:
    whitelist = sources.get(KERNEL_WHITELIST)
    if whitelist is None or not whitelist.ok:
        return {}
    from kvminfo.sources.whitelist_facts import WhitelistFacts  # loaded already: the source ran

    if not isinstance(whitelist.facts, WhitelistFacts):
        return {}
    return {f"{VERSION_PREFIX}{feature}": "true" for feature in whitelist.facts.whitelisted}


def render_labels(sources: Iterable[SourceResult], verdicts: Iterable[FeatureVerdict],
                  kubevirt_names: bool = False,
                  families: Iterable[str] = FAMILIES,
                  source_labels: Mapping[str, str] | None = None,
                  family_facts: FamilyFacts | None = None) -> tuple[dict[str, str], list[str]]:
    """(labels sorted by key, warnings). Every label is checked against NFD's
    rules; one that fails is dropped with a warning, never passed through.
    ``source_labels``: what sources made on their own (Source.labels), checked the same way.
    ``family_facts``: kvminfo.features.families.family_facts(); without it the families beyond
    caps and version give no label."""
    by_name, wanted = _by_name(sources), set(families)
    warnings: list[str] = []
    candidates: dict[str, str] = dict(source_labels or {})
    if "caps" in wanted:
        candidates.update(caps_labels(by_name, verdicts, kubevirt_names, warnings))
    if "version" in wanted:
        candidates.update(version_labels(by_name))
    if family_facts is not None:
        candidates.update(family_labels(family_facts, wanted, warnings))
    candidates = {full_key(key): value for key, value in candidates.items()}  # one qualified form everywhere
    labels: dict[str, str] = {}
    for key in sorted(candidates):
        try:
            check_label(key, candidates[key])
        except LabelError as err:
            warnings.append(f"dropped: {err}")
            continue
        labels[key] = candidates[key]
    return labels, warnings
