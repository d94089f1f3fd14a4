"""Label families: the names `--family` takes (kvminfo/labels/render.py renders them).

- caps: Hyper-V enlightenments, kvm-info-usable/nested/cpu-vendor/host-model
- version: the kernel whitelist (kvm-info-version-*)
- cpu-models: one label per CPU model libvirt offers (usable, not deprecated, not obsolete)
- cpu-features: one label per feature of the host CPU (libvirt's baseline of the host-model, as KubeVirt)
- machine-types: one label per machine type KVM guests of the host's architecture can use
- host-model-features: one label per feature the host model requires (off by default: 15-80 labels)
- confidential: SEV, SEV-ES, SEV-SNP, TDX, SGX (+ EPC size)
- tsc: TSC frequency and whether KVM can scale it
- limits: max vCPUs per VM
"""

from kvminfo.sources.facts import KERNEL_WHITELIST, KVM, LIBVIRT

FAMILIES: tuple[str, ...] = ("caps", "version", "cpu-models", "cpu-features", "host-model-features", "machine-types",
                             "confidential", "tsc", "limits")
# Every family but host-model-features (KubeVirt uses those only for host-model live migration,
# and they are the largest family on s390x: 74 labels in the corpus).
DEFAULT_FAMILIES: tuple[str, ...] = tuple(f for f in FAMILIES if f != "host-model-features")
# Which sources each family reads (registry names, kvminfo.sources.facts).
FAMILY_SOURCES: dict[str, tuple[str, ...]] = {
    "caps": (KVM, LIBVIRT),
    "version": (KERNEL_WHITELIST,),
    "cpu-models": (KVM, LIBVIRT),
    "cpu-features": (KVM, LIBVIRT),
    "machine-types": (KVM, LIBVIRT),
    "host-model-features": (KVM, LIBVIRT),
    "confidential": (KVM, LIBVIRT),
    "tsc": (KVM, LIBVIRT),
    "limits": (KVM,),
}
