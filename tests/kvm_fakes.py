"""A Hyper-V capable kernel, emulated at the lowest layer only.

This machine's /dev/kvm has no Hyper-V support, so positive cases replace
kvminfo.sources.ioctl.ioctl with HyperVKernel, which answers the Hyper-V
questions the way Linux's KVM does (KVM_CHECK_EXTENSION values, the E2BIG
protocols of KVM_GET_MSR_INDEX_LIST and KVM_GET_SUPPORTED_HV_CPUID, system vs
vCPU fd) and passes every other ioctl to the real device: API version, other
caps, the real MSR list, KVM_CREATE_VM/KVM_CREATE_VCPU all stay real.

HV CPUID values are built from the Hyper-V TLFS bit names the kernel uses in
kvm_get_hv_cpuid() (arch/x86/kvm/hyperv.c, Linux 6.x), independently of
kvminfo's own table, so the tests cross-check that table.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field

from kvminfo.sources import ioctl as kvm_ioctl

REAL_IOCTL = kvm_ioctl.ioctl

# hyperv-tlfs.h, HYPERV_CPUID_FEATURES (0x40000003) EAX
HV_MSR_VP_RUNTIME_AVAILABLE = 1 << 0
HV_MSR_TIME_REF_COUNT_AVAILABLE = 1 << 1
HV_MSR_SYNIC_AVAILABLE = 1 << 2
HV_MSR_SYNTIMER_AVAILABLE = 1 << 3
HV_MSR_APIC_ACCESS_AVAILABLE = 1 << 4
HV_MSR_HYPERCALL_AVAILABLE = 1 << 5
HV_MSR_VP_INDEX_AVAILABLE = 1 << 6
HV_MSR_RESET_AVAILABLE = 1 << 7
HV_MSR_REFERENCE_TSC_AVAILABLE = 1 << 9
HV_ACCESS_FREQUENCY_MSRS = 1 << 11
HV_ACCESS_REENLIGHTENMENT = 1 << 13
HV_ACCESS_TSC_INVARIANT = 1 << 15
# HYPERV_CPUID_FEATURES EDX
HV_FEATURE_XMM_HYPERCALL_INPUT_AVAILABLE = 1 << 4
HV_FEATURE_FREQUENCY_MSRS_AVAILABLE = 1 << 8
HV_FEATURE_GUEST_CRASH_MSR_AVAILABLE = 1 << 10
HV_FEATURE_EXT_GVA_RANGES_FLUSH = 1 << 14
HV_FEATURE_XMM_HYPERCALL_OUTPUT_AVAILABLE = 1 << 15
HV_STIMER_DIRECT_MODE_AVAILABLE = 1 << 19
# HYPERV_CPUID_ENLIGHTMENT_INFO (0x40000004) EAX
HV_X64_REMOTE_TLB_FLUSH_RECOMMENDED = 1 << 2
HV_X64_APIC_ACCESS_RECOMMENDED = 1 << 3
HV_X64_RELAXED_TIMING_RECOMMENDED = 1 << 5
HV_DEPRECATING_AEOI_RECOMMENDED = 1 << 9
HV_X64_CLUSTER_IPI_RECOMMENDED = 1 << 10
HV_X64_EX_PROCESSOR_MASKS_RECOMMENDED = 1 << 11
HV_X64_ENLIGHTENED_VMCS_RECOMMENDED = 1 << 14
# HYPERV_CPUID_NESTED_FEATURES (0x4000000A) EAX
HV_X64_NESTED_DIRECT_FLUSH = 1 << 17
HV_X64_NESTED_MSR_BITMAP = 1 << 19

HYPERV_MSRS = [0x40000000, 0x40000001, 0x40000002, 0x40000003, 0x40000010, 0x40000020, 0x40000021,
               0x40000022, 0x40000023, 0x40000073, 0x40000080, 0x40000081, 0x40000082, 0x40000083,
               0x40000084, 0x40000090, 0x400000B0, 0x400000B1, 0x400000B2, 0x400000B3,
               0x40000100, 0x40000101, 0x40000102, 0x40000103, 0x40000104, 0x40000105, 0x40000106,
               0x40000107]

KVM_HYPERV_CAPS = {name: 1 for name in kvm_ioctl.HYPERV_CAPS}


def intel_hv_cpuid(evmcs: bool = True) -> list[tuple[int, int, int, int, int]]:
    """(function, eax, ebx, ecx, edx) as Linux 6.x answers on an Intel host (evmcs: kvm_intel nested)."""
    features_eax = (HV_MSR_VP_RUNTIME_AVAILABLE | HV_MSR_TIME_REF_COUNT_AVAILABLE | HV_MSR_SYNIC_AVAILABLE
                    | HV_MSR_SYNTIMER_AVAILABLE | HV_MSR_APIC_ACCESS_AVAILABLE | HV_MSR_HYPERCALL_AVAILABLE
                    | HV_MSR_VP_INDEX_AVAILABLE | HV_MSR_RESET_AVAILABLE | HV_MSR_REFERENCE_TSC_AVAILABLE
                    | HV_ACCESS_FREQUENCY_MSRS | HV_ACCESS_REENLIGHTENMENT | HV_ACCESS_TSC_INVARIANT)
    features_edx = (HV_FEATURE_XMM_HYPERCALL_INPUT_AVAILABLE | HV_FEATURE_FREQUENCY_MSRS_AVAILABLE
                    | HV_FEATURE_GUEST_CRASH_MSR_AVAILABLE | HV_FEATURE_EXT_GVA_RANGES_FLUSH
                    | HV_FEATURE_XMM_HYPERCALL_OUTPUT_AVAILABLE | HV_STIMER_DIRECT_MODE_AVAILABLE)
    enlightenment_eax = (HV_X64_REMOTE_TLB_FLUSH_RECOMMENDED | HV_X64_APIC_ACCESS_RECOMMENDED
                         | HV_X64_RELAXED_TIMING_RECOMMENDED | HV_DEPRECATING_AEOI_RECOMMENDED
                         | HV_X64_CLUSTER_IPI_RECOMMENDED | HV_X64_EX_PROCESSOR_MASKS_RECOMMENDED
                         | (HV_X64_ENLIGHTENED_VMCS_RECOMMENDED if evmcs else 0))
    entries = [
        (0x40000000, 0x40000006 if not evmcs else 0x40000082, 0x7263694D, 0x666F736F, 0x76482074),
        (0x40000001, 0x31237648, 0, 0, 0),
        (0x40000002, 0, 0, 0, 0),
        (0x40000003, features_eax, 0, 0, features_edx),
        (0x40000004, enlightenment_eax, 0xFFFFFFFF, 0, 0),
        (0x40000005, 4096, 0, 0, 0),
        (0x40000006, 0, 0, 0, 0),
    ]
    if evmcs:
        entries += [
            (0x4000000A, 0x0100 | HV_X64_NESTED_DIRECT_FLUSH | HV_X64_NESTED_MSR_BITMAP, 0, 0, 0),
            (0x40000080, 0, 0, 0, 0),
            (0x40000081, 0x7263694D, 0x666F736F, 0x76482074, 0),
            (0x40000082, 0x31237648, 0, 0, 0),
        ]
    return entries


def _fd_target(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@dataclass
class HyperVKernel:
    """Answers Hyper-V ioctls like a capable kernel; the rest goes to the real /dev/kvm.

    hv_cpuid_on: "system" (KVM_CAP_SYS_HYPERV_CPUID, Linux >= 5.11), "vcpu"
    (only KVM_CAP_HYPERV_CPUID, 5.0-5.10) or None (older: legacy table only).
    fail: request -> errno raised for that request (fail_times times, -1 = always).
    """

    caps: dict[str, int] = field(default_factory=lambda: dict(KVM_HYPERV_CAPS))
    extra_msrs: list[int] = field(default_factory=lambda: list(HYPERV_MSRS))
    hv_cpuid: list[tuple[int, int, int, int, int]] | None = field(default_factory=intel_hv_cpuid)
    hv_cpuid_on: str | None = "system"
    fail: dict[int, int] = field(default_factory=dict)
    fail_times: int = -1
    calls: list[tuple[int, object]] = field(default_factory=list)
    hv_cpuid_e2big: int = 0

    def __post_init__(self) -> None:
        if self.hv_cpuid_on != "system":
            self.caps["KVM_CAP_SYS_HYPERV_CPUID"] = 0
        if self.hv_cpuid_on is None:
            self.caps["KVM_CAP_HYPERV_CPUID"] = 0

    def __call__(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        self.calls.append((request, arg if isinstance(arg, int) else bytes(arg[:8])))
        if request in self.fail and self.fail_times != 0:
            self.fail_times -= 1
            code = self.fail[request]
            raise OSError(code, os.strerror(code))
        if request == kvm_ioctl.KVM_CHECK_EXTENSION:
            names = {number: name for name, number in kvm_ioctl.ALL_CAPS.items()}
            if names.get(arg) in self.caps:
                return self.caps[names[arg]]
        if request == kvm_ioctl.KVM_GET_MSR_INDEX_LIST:
            return self._msr_index_list(fd, arg)
        if request == kvm_ioctl.KVM_GET_SUPPORTED_HV_CPUID:
            return self._hv_cpuid(fd, arg)
        return REAL_IOCTL(fd, request, arg)

    def _msr_index_list(self, fd: int, buf: bytearray) -> int:
        real = _real_msr_list(fd)
        msrs = real + [m for m in self.extra_msrs if m not in real]
        (room,) = struct.unpack_from("=I", buf)
        struct.pack_into("=I", buf, 0, len(msrs))  # the kernel writes the count back, also on E2BIG
        if room < len(msrs):
            raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))
        struct.pack_into(f"={len(msrs)}I", buf, 4, *msrs)
        return 0

    def _hv_cpuid(self, fd: int, buf: bytearray) -> int:
        # Linux >= 5.11 answers on the system and vCPU fds, 5.0-5.10 on a vCPU fd only.
        on_vcpu = "kvm-vcpu" in _fd_target(fd)
        accepts = {"system": True, "vcpu": on_vcpu, None: False}[self.hv_cpuid_on]
        if self.hv_cpuid is None or not accepts:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        (room,) = struct.unpack_from("=I", buf)
        if room < len(self.hv_cpuid):  # the kernel does not write nent back on E2BIG
            self.hv_cpuid_e2big += 1
            raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))
        struct.pack_into("=I", buf, 0, len(self.hv_cpuid))
        for i, (function, eax, ebx, ecx, edx) in enumerate(self.hv_cpuid):
            struct.pack_into("=10I", buf, 8 + 40 * i, function, 0, 0, eax, ebx, ecx, edx, 0, 0, 0)
        return 0


def _real_msr_list(fd: int) -> list[int]:
    buf = bytearray(4)
    try:
        REAL_IOCTL(fd, kvm_ioctl.KVM_GET_MSR_INDEX_LIST, buf)
    except OSError as err:
        assert err.errno == errno.E2BIG
    (count,) = struct.unpack_from("=I", buf)
    buf = bytearray(struct.pack("=I", count) + bytes(4 * count))
    REAL_IOCTL(fd, kvm_ioctl.KVM_GET_MSR_INDEX_LIST, buf)
    return list(struct.unpack_from(f"={count}I", buf, 4))
