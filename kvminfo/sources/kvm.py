"""KVM source: what /dev/kvm itself says (ioctls), plus nested and CPU vendor.

Raw facts only (KvmFacts, kvminfo/sources/facts.py). Every failure becomes a
SourceResult with a one-line reason; nothing here raises to the caller.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
from dataclasses import replace
from typing import TYPE_CHECKING

from kvminfo.model import SourceResult, Status
from kvminfo.sources import ioctl as _kvm  # reached as _kvm.ioctl so tests can replace it
from kvminfo.sources.base import LocalSource
from kvminfo.sources.facts import KVM, KvmFacts
from kvminfo.sources.kvm_params import read_bool_param, read_confidential_params

if TYPE_CHECKING:
    from kvminfo.model import ProbeOptions
    from kvminfo.sources.facts import HvCpuidEntry

log = logging.getLogger(__name__)

NESTED_PARAM_PATHS = (
    "/sys/module/kvm_intel/parameters/nested",
    "/sys/module/kvm_amd/parameters/nested",
)
CPUINFO_PATH = "/proc/cpuinfo"
# /proc/cpuinfo vendor_id -> the vendor names libvirt gives the host-model (and so KubeVirt's
# cpu-vendor label): src/cpu_map/x86_vendors.xml names CentaurHauls "Zhaoxin CentaurHauls", here
# in the label-valid form that name sanitizes to; s390x prints "IBM/S390" (arch/s390/kernel/
# processor.c), where libvirt has no vendor and KubeVirt says IBM (node-labeller s390x.go).
CPU_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon",
               "CentaurHauls": "Zhaoxin-CentaurHauls", "IBM/S390": "IBM"}

_EINTR_RETRIES = 3  # fcntl.ioctl is not retried by Python (PEP 475 skips ioctl)
_HV_CPUID_FIRST_NENT = 8  # kernels return ~10 leaves: the first call usually grows
_HV_CPUID_MAX_NENT = 1024
_CPUID_ENTRY = struct.Struct("=10I")  # kvm_cpuid_entry2: function,index,flags,eax,ebx,ecx,edx,padding[3]


class _IoctlFailed(Exception):
    """An ioctl failed in a way that makes the whole source unusable."""


def _call(fd: int, request: int, arg: int | bytearray, what: str) -> int:
    """One ioctl with a bounded retry on EINTR; other errors -> OSError."""
    for attempt in range(_EINTR_RETRIES):
        try:
            return _kvm.ioctl(fd, request, arg)
        except InterruptedError:
            log.debug("%s interrupted (attempt %d), retrying", what, attempt + 1)
    raise InterruptedError(errno.EINTR, f"{what}: interrupted {_EINTR_RETRIES} times")


def _why(err: OSError) -> str:
    """errno's text ("Input/output error"), or the message of an errno-less OSError."""
    return os.strerror(err.errno) if err.errno else str(err)


def _must(fd: int, request: int, arg: int | bytearray, what: str) -> int:
    try:
        return _call(fd, request, arg, what)
    except OSError as err:
        raise _IoctlFailed(f"{what} failed: {_why(err)}") from None


def read_caps(fd: int) -> dict[str, int]:
    return {name: _must(fd, _kvm.KVM_CHECK_EXTENSION, number, f"KVM_CHECK_EXTENSION({name})")
            for name, number in _kvm.ALL_CAPS.items()}


def read_msr_index_list(fd: int) -> list[int] | None:
    """KVM_GET_MSR_INDEX_LIST: ask with nmsrs=0, the kernel answers E2BIG and the count.

    None when the kernel does not have the ioctl at all (EINVAL/ENOTTY: not x86,
    where MSRs do not exist): that says "no Hyper-V", not "broken KVM".
    """
    nmsrs = 0
    for _ in range(4):  # the list cannot really grow between calls; bound it anyway
        buf = bytearray(struct.pack("=I", nmsrs) + bytes(4 * nmsrs))
        try:
            _call(fd, _kvm.KVM_GET_MSR_INDEX_LIST, buf, "KVM_GET_MSR_INDEX_LIST")
        except OSError as err:
            if err.errno in _kvm.X86_ONLY_ERRNOS:
                log.debug("kvm: KVM_GET_MSR_INDEX_LIST: %s (not x86): no MSRs, no Hyper-V", _why(err))
                return None
            if err.errno != errno.E2BIG:
                raise _IoctlFailed(f"KVM_GET_MSR_INDEX_LIST failed: {_why(err)}") from None
            (needed,) = struct.unpack_from("=I", buf)
            if needed <= nmsrs:
                raise _IoctlFailed(f"KVM_GET_MSR_INDEX_LIST: E2BIG with {nmsrs} slots but asks for {needed}") from None
            nmsrs = needed
            continue
        (count,) = struct.unpack_from("=I", buf)
        return list(struct.unpack_from(f"={count}I", buf, 4))
    raise _IoctlFailed("KVM_GET_MSR_INDEX_LIST kept answering E2BIG")


def read_hv_cpuid(fd: int) -> list[HvCpuidEntry]:
    """KVM_GET_SUPPORTED_HV_CPUID on ``fd``, doubling the buffer on E2BIG.

    Raises OSError (not E2BIG) when the kernel refuses; the caller decides.
    """
    return read_cpuid2(fd, _kvm.KVM_GET_SUPPORTED_HV_CPUID, "KVM_GET_SUPPORTED_HV_CPUID")


def read_cpuid2(fd: int, request: int, what: str) -> list[HvCpuidEntry]:
    """One struct kvm_cpuid2 ioctl (KVM_GET_SUPPORTED_HV_CPUID, KVM_GET_SUPPORTED_CPUID) on ``fd``,
    doubling the buffer on E2BIG. Raises OSError (not E2BIG) when the kernel refuses."""
    nent = _HV_CPUID_FIRST_NENT
    while True:
        buf = bytearray(struct.pack("=II", nent, 0) + bytes(_CPUID_ENTRY.size * nent))
        try:
            _call(fd, request, buf, what)
        except OSError as err:
            if err.errno == errno.E2BIG and nent < _HV_CPUID_MAX_NENT:
                nent *= 2
                continue
            raise
        (count,) = struct.unpack_from("=I", buf)
        if count > nent:
            raise OSError(errno.EINVAL, f"kernel reported {count} entries for a {nent}-entry buffer")
        entries: list[HvCpuidEntry] = []
        for i in range(count):
            function, index, _flags, eax, ebx, ecx, edx, *_pad = _CPUID_ENTRY.unpack_from(buf, 8 + i * _CPUID_ENTRY.size)
            entries.append({"function": function, "index": index, "eax": eax, "ebx": ebx, "ecx": ecx, "edx": edx})
        return entries


def _hv_cpuid_on_vcpu(kvm_fd: int) -> list[HvCpuidEntry]:
    """Older kernels answer KVM_GET_SUPPORTED_HV_CPUID only on a vCPU: make a throwaway VM."""
    vm_fd = _call(kvm_fd, _kvm.KVM_CREATE_VM, 0, "KVM_CREATE_VM")
    try:
        vcpu_fd = _call(vm_fd, _kvm.KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")
        try:
            return read_hv_cpuid(vcpu_fd)
        finally:
            os.close(vcpu_fd)
    finally:
        os.close(vm_fd)


def read_tsc_khz(kvm_fd: int, caps: dict[str, int]) -> tuple[int | None, str | None]:
    """(kHz, None) from KVM_GET_TSC_KHZ on a throwaway VM's vCPU: the rate KVM gives a guest by
    default, i.e. the host TSC (libvirt's host capabilities <counter name='tsc'> is this value x
    1000); or (None, why) when KVM_CAP_GET_TSC_KHZ is 0 or the kernel refuses (not a source error)."""
    if caps.get("KVM_CAP_GET_TSC_KHZ", 0) <= 0:
        return None, "KVM_CAP_GET_TSC_KHZ is 0"
    what = "KVM_CREATE_VM"
    try:
        vm_fd = _call(kvm_fd, _kvm.KVM_CREATE_VM, 0, what)
        try:
            what = "KVM_CREATE_VCPU"
            vcpu_fd = _call(vm_fd, _kvm.KVM_CREATE_VCPU, 0, what)
            try:
                what = "KVM_GET_TSC_KHZ"
                khz = _call(vcpu_fd, _kvm.KVM_GET_TSC_KHZ, 0, what)
            finally:
                os.close(vcpu_fd)
        finally:
            os.close(vm_fd)
    except OSError as err:
        log.debug("kvm: no TSC frequency from KVM: %s failed: %s", what, _why(err))
        return None, f"{what} failed: {_why(err)}"
    return (khz, None) if khz > 0 else (None, f"KVM_GET_TSC_KHZ answered {khz}")


# CPUID 0x80000007 EDX bit 8: invariant TSC (AMD APM vol. 3 "TscInvariant", Intel SDM vol. 2A "Invariant TSC").
_INVTSC_LEAF, _INVTSC_EDX_BIT = 0x80000007, 8


def read_invariant_tsc(fd: int, cpuinfo_flags: frozenset[str] | None) -> tuple[bool | None, str]:
    """(whether the host TSC is invariant, what said so), as libvirt decides before it reports a
    TSC frequency (src/cpu/cpu_x86.c virCPUx86GetHost: "Probing for TSC frequency makes sense only
    if the CPU supports invariant TSC"; it tests the host CPUID's invtsc bit).

    The host's CPUID bit as KVM_GET_SUPPORTED_CPUID passes it on (arch/x86/kvm/cpuid.c masks leaf
    0x80000007 EDX with the host's own, boot_cpu_data.x86_power); where KVM cannot say, Linux's
    reading of the same bit: it sets both constant_tsc and nonstop_tsc in /proc/cpuinfo when it is
    set (arch/x86/kernel/cpu/amd.c, intel.c), while constant_tsc alone also marks older CPUs whose
    TSC stops in deep C-states. None: nobody could say (then no TSC frequency is published).
    """
    try:
        entries = read_cpuid2(fd, _kvm.KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID")
    except OSError as err:
        kvm_said = f"KVM_GET_SUPPORTED_CPUID failed: {_why(err)}"
    else:
        leaf = next((e for e in entries if e["function"] == _INVTSC_LEAF and e["index"] == 0), None)
        if leaf is not None:
            invariant = bool(leaf["edx"] >> _INVTSC_EDX_BIT & 1)
            return invariant, (f"CPUID 0x80000007 EDX bit 8 (invariant TSC) is {'set' if invariant else 'clear'} "
                               "(KVM_GET_SUPPORTED_CPUID)")
        kvm_said = "KVM_GET_SUPPORTED_CPUID has no leaf 0x80000007"
    if cpuinfo_flags is None:
        return None, f"{kvm_said}; no flags line in {CPUINFO_PATH}"
    missing = [flag for flag in ("constant_tsc", "nonstop_tsc") if flag not in cpuinfo_flags]
    if missing:
        return False, f"{kvm_said}; {CPUINFO_PATH} lacks {' and '.join(missing)}"
    return True, f"{kvm_said}; {CPUINFO_PATH} has constant_tsc and nonstop_tsc"


def probe_hv_cpuid(fd: int, caps: dict[str, int]) -> tuple[list[HvCpuidEntry] | None, str | None, str | None]:
    """(entries or None, via "system"|"vcpu"|None, why not) per the caps that advertise it."""
    if caps.get("KVM_CAP_SYS_HYPERV_CPUID", 0) > 0:
        via = "system"
    elif caps.get("KVM_CAP_HYPERV_CPUID", 0) > 0:
        via = "vcpu"
    else:
        return None, None, "KVM_CAP_SYS_HYPERV_CPUID and KVM_CAP_HYPERV_CPUID are 0"
    try:
        entries = read_hv_cpuid(fd) if via == "system" else _hv_cpuid_on_vcpu(fd)
    except OSError as err:
        reason = f"KVM_GET_SUPPORTED_HV_CPUID on the {via} fd failed: {_why(err)}"
        if err.errno in _kvm.X86_ONLY_ERRNOS:
            log.debug("kvm: %s (not on this architecture); falling back to the capability/MSR table", reason)
        else:
            log.warning("kvm: %s; falling back to the capability/MSR table", reason)
        return None, None, reason
    return entries, via, None


def read_nested(paths: tuple[str, ...] | None = None) -> bool | None:
    """kvm_intel/kvm_amd `nested` parameter: Y/1 -> True, N/0 -> False, no module (or neither) -> None."""
    for path in NESTED_PARAM_PATHS if paths is None else paths:
        value = read_bool_param(path)
        if value is not None:
            return value
    return None


def read_cpuinfo_flags(path: str | None = None) -> frozenset[str] | None:
    """The first ``flags`` line of /proc/cpuinfo (x86), None when there is none (other
    architectures name it ``features``; an unreadable file)."""
    try:
        with open(CPUINFO_PATH if path is None else path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def read_cpu_vendor(path: str | None = None) -> str | None:
    path = CPUINFO_PATH if path is None else path
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "vendor_id":
                    raw = value.strip()
                    return CPU_VENDORS.get(raw, raw or None)
    except OSError as err:
        log.warning("kvm: cannot read %s: %s", path, err.strerror)
    return None


def _open_device(path: str) -> int | SourceResult:
    """Open the device read-write, or a SourceResult saying precisely why not."""
    def unavailable(reason: str) -> SourceResult:
        return SourceResult(KVM, Status.UNAVAILABLE, f"{path}: {reason}")

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return unavailable("no such device (KVM module not loaded, or the device is not passed to this container)")
    except OSError as err:
        return unavailable(err.strerror or str(err))
    if not stat.S_ISCHR(st.st_mode):
        return unavailable("not a character device")
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        return unavailable("permission denied (read-write access is needed)")
    except OSError as err:
        return unavailable(err.strerror or str(err))


def probe_kvm(path: str, nested_paths: tuple[str, ...] | None = None,
              cpuinfo_path: str | None = None, families: tuple[str, ...] = ()) -> SourceResult:
    """Probe the KVM device at ``path``; host files default to the module's paths. ``families``:
    the label families asked for; "tsc" adds KVM_GET_TSC_KHZ (a throwaway VM, ~1 ms), "confidential"
    the kvm_amd/kvm_intel parameters. The NFD hook (--family caps) pays for neither."""
    params = None
    if "confidential" in families:
        params = read_confidential_params()
    host = KvmFacts(nested=read_nested(nested_paths), cpu_vendor=read_cpu_vendor(cpuinfo_path),
                    module_params=params)
    opened = _open_device(path)
    if isinstance(opened, SourceResult):
        return replace(opened, facts=host)
    fd = opened
    try:
        try:
            api_version = _call(fd, _kvm.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
        except OSError as err:
            # ENOTTY: a character device that does not speak KVM's ioctls at all
            what = "not a KVM device" if err.errno == errno.ENOTTY else "KVM_GET_API_VERSION failed"
            return SourceResult(KVM, Status.ERROR, f"{path}: {what} (KVM_GET_API_VERSION: {_why(err)})", host)
        if api_version != _kvm.KVM_API_VERSION:
            return SourceResult(KVM, Status.ERROR, f"{path}: KVM API version {api_version}, "
                                f"need {_kvm.KVM_API_VERSION}", replace(host, api_version=api_version))
        caps = read_caps(fd)
        msrs = read_msr_index_list(fd)
        hv_cpuid, via, hv_cpuid_missing = probe_hv_cpuid(fd, caps)
        tsc_khz, tsc_missing = read_tsc_khz(fd, caps) if "tsc" in families else (None, None)
        invariant_tsc, invariant_tsc_said = (read_invariant_tsc(fd, read_cpuinfo_flags(cpuinfo_path))
                                             if "tsc" in families else (None, None))
    except _IoctlFailed as err:
        return SourceResult(KVM, Status.ERROR, f"{path}: {err}", host)
    finally:
        os.close(fd)
    facts = replace(host, api_version=api_version, caps=caps, msrs=msrs, hv_cpuid=hv_cpuid,
                    hv_cpuid_via=via, hv_cpuid_missing=hv_cpuid_missing, tsc_khz=tsc_khz,
                    tsc_missing=tsc_missing, invariant_tsc=invariant_tsc, invariant_tsc_said=invariant_tsc_said)
    log.debug("kvm: %s API %d, %s MSRs, HV CPUID %s", path, api_version, "no" if msrs is None else len(msrs),
              via or "absent")
    return SourceResult(KVM, Status.OK, "", facts)


class KvmSource(LocalSource):
    """The KVM device (--kvm-device) and the host files next to it."""

    name = KVM

    def probe(self, options: ProbeOptions) -> SourceResult:
        return probe_kvm(options.kvm_path, families=options.families)

    def summary(self, result: SourceResult) -> str:
        f = result.facts
        assert isinstance(f, KvmFacts)
        caps = f.caps or {}
        hv = f"HV CPUID via {f.hv_cpuid_via} fd" if f.hv_cpuid is not None else f"no HV CPUID ({f.hv_cpuid_missing})"
        nested = {True: "on", False: "off", None: "unknown"}[f.nested]
        msrs = "no MSR index list (not x86)" if f.msrs is None else f"{len(f.msrs)} MSRs"
        max_vcpus = caps.get("KVM_CAP_MAX_VCPUS")
        vcpus = f"max vCPUs {max_vcpus}, " if max_vcpus is not None else ""
        vendor = f"CPU vendor {f.cpu_vendor}" if f.cpu_vendor else "CPU vendor unknown"
        return f"API {f.api_version}, {msrs}, {hv}, {vcpus}nested {nested}, {vendor}"

    def attributes(self, result: SourceResult) -> dict[str, object]:
        """NodeFeature attributes kvminfo.kvm: usable, api_version, max_vcpus, nested, cpu_vendor."""
        f = result.facts
        assert isinstance(f, KvmFacts)
        return {
            "usable": True,
            "api_version": f.api_version,
            "max_vcpus": (f.caps or {}).get("KVM_CAP_MAX_VCPUS"),
            "nested": f.nested,
            "cpu_vendor": f.cpu_vendor,
        }


SOURCE = KvmSource()
