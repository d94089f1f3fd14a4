"""KVM on arm64, s390x, ppc64, riscv64 and loongarch64: usable, labelled, no Hyper-V.

Issue 9 case 3: there `KVM_GET_MSR_INDEX_LIST` answers EINVAL and
`KVM_GET_SUPPORTED_HV_CPUID` ENOTTY (x86-only ioctls: the generic KVM device
ioctl handler passes unknown requests to kvm_arch_dev_ioctl, which returns
-EINVAL outside x86), and KVM_CHECK_EXTENSION answers 0 for x86-only caps.
kvminfo marked the whole KVM source `error`: no kvm-info-usable, no label at
all. This machine is x86, so those answers are injected at the lowest layer
(kvminfo.sources.ioctl.ioctl); everything else goes to the real /dev/kvm. The
libvirt side is libvirt 11.3.0's own recordings of those architectures
(tests/fixtures/domcaps/libvirt-11.3.0-*).
"""

from __future__ import annotations

import errno
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest
from conftest import DOMCAPS_FIXTURES

from kvminfo import cli
from kvminfo.sources import ioctl as kvm_ioctl

REAL_IOCTL = kvm_ioctl.ioctl
NS = "feature.node.kubernetes.io/"

# KVM_CAP_* that only x86 KVM implements (linux/kvm.h users in arch/x86/kvm/x86.c).
X86_ONLY_CAPS = {name for name in kvm_ioctl.HYPERV_CAPS} | {
    "KVM_CAP_TSC_CONTROL", "KVM_CAP_GET_TSC_KHZ", "KVM_CAP_X86_SMM", "KVM_CAP_SGX_ATTRIBUTE",
    "KVM_CAP_VM_TSC_CONTROL"}

RECORDINGS = {
    "aarch64": "libvirt-11.3.0-qemu_8.2.0-virt.aarch64.xml",
    "s390x": "libvirt-11.3.0-qemu_10.0.0.s390x.xml",
    "ppc64": "libvirt-11.3.0-qemu_7.1.0.ppc64.xml",
    "riscv64": "libvirt-11.3.0-qemu_9.1.0-virt.riscv64.xml",
    "loongarch64": "libvirt-11.3.0-qemu_8.2.0-virt.loongarch64.xml",
}


@dataclass
class NonX86Kernel:
    """KVM as a non-x86 kernel answers the x86-only questions; the rest is the real device."""

    msr_list_errno: int = errno.EINVAL
    calls: list[int] = field(default_factory=list)

    def __call__(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        self.calls.append(request)
        if request == kvm_ioctl.KVM_GET_MSR_INDEX_LIST:
            raise OSError(self.msr_list_errno, os.strerror(self.msr_list_errno))
        if request == kvm_ioctl.KVM_GET_SUPPORTED_HV_CPUID:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        if request == kvm_ioctl.KVM_CHECK_EXTENSION:
            names = {number: name for name, number in kvm_ioctl.ALL_CAPS.items()}
            if names.get(arg) in X86_ONLY_CAPS:
                return 0
        return REAL_IOCTL(fd, request, arg)


def host_model(path) -> str | None:
    """The independent reading: libvirt's host-model CPU name, when that mode is supported."""
    mode = ET.parse(path).getroot().find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") != "yes":
        return None
    return (mode.findtext("model") or "").strip() or None


@pytest.mark.parametrize("msr_list_errno", [errno.EINVAL, errno.ENOTTY])
@pytest.mark.parametrize("arch", RECORDINGS)
def test_non_x86_kvm_is_usable_and_labelled_without_hyperv(monkeypatch, capsys, arch, msr_list_errno):
    recording = DOMCAPS_FIXTURES / RECORDINGS[arch]
    root = ET.parse(recording).getroot()
    assert (root.findtext("domain"), root.findtext("arch")) == ("kvm", arch)
    assert root.find("features/hyperv") is None  # libvirt says nothing about Hyper-V there
    kernel = NonX86Kernel(msr_list_errno)
    monkeypatch.setattr(kvm_ioctl, "ioctl", kernel)

    assert cli.main(["probe", "--json", "--domcaps-xml", str(recording)]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    kvm = next(s for s in report["sources"] if s["name"] == "kvm")
    assert kvm["status"] == "ok", kvm["reason"]
    assert kvm["facts"]["msrs"] is None and kvm["facts"]["hv_cpuid"] is None
    assert kvm_ioctl.KVM_GET_MSR_INDEX_LIST in kernel.calls
    assert err == ""  # an architecture without Hyper-V is not a fault worth a warning
    for feature in report["features"]:
        assert feature["support"] == "unsupported" and feature["said_by"] == {"kvm-caps": "unsupported"}
        assert "no Hyper-V emulation" in feature["reasons"]["kvm-caps"]

    assert cli.main(["labels", "--domcaps-xml", str(recording)]) == 0
    labels = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert labels[f"{NS}kvm-info-usable"] == "true"
    assert not [key for key in labels if "hyperv" in key]
    model = host_model(recording)
    assert (f"{NS}kvm-info-host-model" in labels) == (model is not None)


def test_a_real_failure_of_the_msr_list_is_still_an_error(monkeypatch):
    """Only "this ioctl does not exist here" means no Hyper-V; EIO stays a broken device."""
    from kvminfo.sources.kvm import probe_kvm

    monkeypatch.setattr(kvm_ioctl, "ioctl", NonX86Kernel(errno.EIO))
    result = probe_kvm("/dev/kvm")
    assert result.status.value == "error" and "KVM_GET_MSR_INDEX_LIST failed: Input/output error" in result.reason


def test_request_numbers_follow_the_architectures_ioctl_encoding():
    """asm-generic (x86, arm64, s390, riscv, loongarch) vs powerpc/mips/sparc/alpha (3 direction bits)."""
    generic = kvm_ioctl._IOC_DIRSHIFT == 30
    if os.uname().machine in ("x86_64", "aarch64", "s390x", "riscv64", "loongarch64"):
        assert generic
    if generic:  # linux/kvm.h values on those architectures
        assert (kvm_ioctl.KVM_GET_API_VERSION, kvm_ioctl.KVM_CHECK_EXTENSION) == (0xAE00, 0xAE03)
        assert kvm_ioctl.KVM_GET_MSR_INDEX_LIST == 0xC004AE02
    else:  # powerpc: _IO(0xAE, 0) = 0x2000AE00
        assert kvm_ioctl.KVM_GET_API_VERSION == 0x2000AE00
