"""The lowest layer of the KVM source: the one function that issues ioctls.

Everything above it (kvm.py, the feature rules, the renderers) runs for real
in tests; a test that needs a Hyper-V capable host replaces only ``ioctl``
(monkeypatch ``kvminfo.sources.ioctl.ioctl``), so callers must reach it as
``ioctl_mod.ioctl(...)``, never ``from ... import ioctl``.

Request numbers are the kernel's _IO/_IOWR encodings (checked against
/usr/include/linux/kvm.h on Debian 12, x86_64). The encoding is the
architecture's: asm-generic/ioctl.h (x86, arm64, s390, riscv, loongarch) or
the 13-bit-size, 3-bit-direction one of powerpc, mips, sparc and alpha
(arch/<arch>/include/uapi/asm/ioctl.h), chosen from uname's machine.
"""

from __future__ import annotations

import errno
import fcntl
import os

if os.uname().machine.startswith(("ppc", "powerpc", "mips", "sparc", "alpha")):
    # dir(3 bits) << 29 | size(13) << 16 | type(8) << 8 | nr(8); NONE 1, READ 2, WRITE 4
    _IOC_NONE, _IOC_READ, _IOC_WRITE, _IOC_DIRSHIFT = 1, 2, 4, 29
else:
    # asm-generic/ioctl.h: dir(2 bits) << 30 | size(14) << 16 | type(8) << 8 | nr(8)
    _IOC_NONE, _IOC_WRITE, _IOC_READ, _IOC_DIRSHIFT = 0, 1, 2, 30


def _ioc(direction: int, type_: int, nr: int, size: int) -> int:
    return (direction << _IOC_DIRSHIFT) | (size << 16) | (type_ << 8) | nr


def _io(type_: int, nr: int) -> int:
    return _ioc(_IOC_NONE, type_, nr, 0)


def _iowr(type_: int, nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, type_, nr, size)


KVMIO = 0xAE
KVM_GET_API_VERSION = _io(KVMIO, 0x00)
KVM_CREATE_VM = _io(KVMIO, 0x01)
KVM_GET_MSR_INDEX_LIST = _iowr(KVMIO, 0x02, 4)  # struct kvm_msr_list {u32 nmsrs; u32 indices[];}
KVM_CHECK_EXTENSION = _io(KVMIO, 0x03)
KVM_CREATE_VCPU = _io(KVMIO, 0x41)
KVM_GET_TSC_KHZ = _io(KVMIO, 0xA3)  # vCPU ioctl (KVM_CAP_GET_TSC_KHZ); returns the guest TSC rate in kHz
KVM_GET_SUPPORTED_HV_CPUID = _iowr(KVMIO, 0xC1, 8)  # struct kvm_cpuid2 {u32 nent, padding; entries[]}
KVM_GET_SUPPORTED_CPUID = _iowr(KVMIO, 0x05, 8)  # system ioctl, the same struct kvm_cpuid2 (x86 only)
assert _IOC_DIRSHIFT != 30 or KVM_GET_SUPPORTED_HV_CPUID == 0xC008AEC1  # linux/kvm.h on x86_64

KVM_API_VERSION = 12

# The ioctls that exist only on x86 KVM: elsewhere (arm64, s390x, ppc64,
# riscv64, loongarch64) the kernel answers EINVAL or ENOTTY, meaning "no
# Hyper-V here", never a broken device (kvm_arch_dev_ioctl returns -EINVAL for
# an unknown request on those architectures).
X86_ONLY_ERRNOS = (errno.EINVAL, errno.ENOTTY)

# KVM_CAP_* numbers (linux/kvm.h). Hyper-V ones first: each is checked.
HYPERV_CAPS: dict[str, int] = {
    "KVM_CAP_HYPERV": 44,
    "KVM_CAP_HYPERV_VAPIC": 45,
    "KVM_CAP_HYPERV_SPIN": 46,
    "KVM_CAP_HYPERV_TIME": 96,
    "KVM_CAP_HYPERV_SYNIC": 123,
    "KVM_CAP_HYPERV_SYNIC2": 148,
    "KVM_CAP_HYPERV_VP_INDEX": 149,
    "KVM_CAP_HYPERV_EVENTFD": 154,
    "KVM_CAP_HYPERV_TLBFLUSH": 155,
    "KVM_CAP_HYPERV_SEND_IPI": 161,
    "KVM_CAP_HYPERV_ENLIGHTENED_VMCS": 163,
    "KVM_CAP_HYPERV_CPUID": 167,
    "KVM_CAP_HYPERV_DIRECT_TLBFLUSH": 175,
    "KVM_CAP_SYS_HYPERV_CPUID": 191,
    "KVM_CAP_HYPERV_ENFORCE_CPUID": 199,
}
# General caps worth reporting to an operator (values are counts or booleans).
GENERAL_CAPS: dict[str, int] = {
    "KVM_CAP_IRQCHIP": 0,
    "KVM_CAP_NR_VCPUS": 9,
    "KVM_CAP_TSC_CONTROL": 60,
    "KVM_CAP_GET_TSC_KHZ": 61,
    "KVM_CAP_MAX_VCPUS": 66,
    "KVM_CAP_X86_SMM": 117,
    "KVM_CAP_MAX_VCPU_ID": 128,
    "KVM_CAP_NESTED_STATE": 157,
    "KVM_CAP_SGX_ATTRIBUTE": 196,
    "KVM_CAP_VM_TSC_CONTROL": 214,
}
ALL_CAPS: dict[str, int] = {**HYPERV_CAPS, **GENERAL_CAPS}


def ioctl(fd: int, request: int, arg: int | bytearray = 0) -> int:
    """Issue one ioctl through libc (fcntl.ioctl); raises OSError on failure.

    A bytearray ``arg`` is passed by pointer and updated in place (also when
    the call fails, which the E2BIG protocols rely on); an int is passed by
    value. Returns the ioctl's non-negative result.
    """
    if isinstance(arg, bytearray):
        return int(fcntl.ioctl(fd, request, arg, True))
    return int(fcntl.ioctl(fd, request, arg))
