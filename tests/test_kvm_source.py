"""The KVM source against the real /dev/kvm, and a Hyper-V capable kernel
injected at the ioctl layer (tests/kvm_fakes.py)."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KVM_CAP_HYPERV, kvm_check_extension, require_real
from kvm_fakes import HyperVKernel, intel_hv_cpuid

from kvminfo.collect import collect
from kvminfo.labels.render import render_labels
from kvminfo.model import ProbeOptions, Status
from kvminfo.sources import ioctl as kvm_ioctl
from kvminfo.sources.kvm import probe_kvm, read_cpu_vendor, read_nested

KVM = "/dev/kvm"
FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def real_kvm() -> None:
    if not os.path.exists(KVM):
        require_real(f"{KVM} does not exist")


def kvm_only(**kw) -> ProbeOptions:
    return ProbeOptions(use_libvirt=False, **kw)


def hyperv_labels(labels) -> set[str]:
    prefix = "feature.node.kubernetes.io/kvm-info-cap-hyperv-"
    return {k.removeprefix(prefix) for k in labels if k.startswith(prefix)}


@pytest.fixture
def install_kernel(monkeypatch):
    """install_kernel(**HyperVKernel options) -> the kernel now answering ioctls."""
    def install(**options) -> HyperVKernel:
        kernel = HyperVKernel(**options)
        monkeypatch.setattr(kvm_ioctl, "ioctl", kernel)
        return kernel
    return install


@pytest.fixture
def hyperv_kernel(install_kernel):
    """A modern Intel host: HV CPUID on the system fd, evmcs (configure before probing)."""
    return install_kernel()


# --- the real device -------------------------------------------------------

def test_ioctl_numbers_match_this_machines_kvm_header():
    header = Path("/usr/include/linux/kvm.h")
    if not header.exists():
        pytest.skip("linux-libc-dev not installed")
    text = header.read_text()
    for name, number in kvm_ioctl.ALL_CAPS.items():
        match = re.search(rf"#define {name}\s+(\d+)", text)
        assert match and int(match.group(1)) == number, name
    assert kvm_ioctl.KVM_GET_SUPPORTED_HV_CPUID == 0xC008AEC1
    assert kvm_ioctl.KVM_GET_MSR_INDEX_LIST == 0xC004AE02
    assert (kvm_ioctl.KVM_GET_API_VERSION, kvm_ioctl.KVM_CHECK_EXTENSION, kvm_ioctl.KVM_CREATE_VCPU) == \
        (0xAE00, 0xAE03, 0xAE41)


def test_real_device_answers_what_the_kernel_answers():
    """Every Hyper-V capability as this kernel answers KVM_CHECK_EXTENSION when asked directly
    (zero on a kernel without Hyper-V emulation, such as kvm_pvm; non-zero on kvm_intel/kvm_amd)."""
    result = probe_kvm(KVM)
    assert result.status is Status.OK, result.reason
    facts = result.facts
    assert facts.api_version == 12  # KVM_GET_API_VERSION is 12 on every kernel since 2.6.22 (kvm/api.rst)
    for name in kvm_ioctl.HYPERV_CAPS:
        assert facts.caps[name] == kvm_check_extension(kvm_ioctl.ALL_CAPS[name]), name
    if kvm_check_extension(KVM_CAP_HYPERV) == 0:  # no Hyper-V emulation: no HV CPUID, no synthetic MSRs
        assert facts.hv_cpuid is None and facts.hv_cpuid_via is None
        assert facts.msrs and not [m for m in facts.msrs if 0x40000000 <= m <= 0x40000FFF]
    assert facts.caps["KVM_CAP_MAX_VCPUS"] >= facts.caps["KVM_CAP_NR_VCPUS"] >= 1


def test_real_device_gives_the_hyperv_labels_its_kernel_allows_and_says_kvm_usable():
    report = collect(kvm_only())
    assert report.labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"
    if kvm_check_extension(KVM_CAP_HYPERV) == 0:
        assert not [k for k in report.labels if "hyperv" in k]
        assert {f.name: f.support.value for f in report.features}["base"] == "unsupported"


def test_a_node_made_with_kvms_major_minor_works_like_dev_kvm(tmp_path):
    st = os.stat(KVM)
    node = tmp_path / "kvm"
    os.mknod(node, stat.S_IFCHR | 0o600, st.st_rdev)
    assert probe_kvm(str(node)).facts.api_version == 12


# --- a Hyper-V capable kernel, injected at the ioctl layer ------------------

def test_hv_cpuid_on_system_fd_grows_on_e2big_and_labels_every_feature(hyperv_kernel):
    result = probe_kvm(KVM)
    assert result.ok, result.reason
    assert result.facts.hv_cpuid_via == "system"
    assert hyperv_kernel.hv_cpuid_e2big >= 1  # 11 leaves do not fit the first 8-entry buffer
    assert len(result.facts.hv_cpuid) == len(intel_hv_cpuid())
    assert any(0x40000000 <= m <= 0x40000FFF for m in result.facts.msrs)
    labels = collect(kvm_only()).labels
    assert hyperv_labels(labels) == {
        "base", "synic2", "relaxed", "vapic", "time", "crash", "reset", "vpindex", "runtime", "synic",
        "synictimer", "frequencies", "reenlightenment", "tlbflush", "evmcs", "ipi", "stimer-direct", "avic",
        "emsr-bitmap", "xmm-input", "tlbflush-ext", "tlbflush-direct"}
    assert all(v == "true" for k, v in labels.items() if k.startswith("feature.node.kubernetes.io/kvm-info-cap-hyperv-"))


def test_amd_like_host_without_evmcs(hyperv_kernel):
    hyperv_kernel.hv_cpuid = intel_hv_cpuid(evmcs=False)
    labels = hyperv_labels(collect(kvm_only()).labels)
    assert {"evmcs", "emsr-bitmap", "tlbflush-direct"}.isdisjoint(labels)
    assert {"relaxed", "vapic", "synictimer", "ipi", "avic"} <= labels


def test_hv_cpuid_dependencies_follow_vpindex(hyperv_kernel):
    entries = intel_hv_cpuid()
    hyperv_kernel.hv_cpuid = [(f, eax & ~(1 << 6) if f == 0x40000003 else eax, b, c, d)
                              for f, eax, b, c, d in entries]
    labels = hyperv_labels(collect(kvm_only()).labels)
    # bits still set, but all of these need vpindex (directly or through synic/tlbflush)
    assert {"vpindex", "synic", "synictimer", "stimer-direct", "tlbflush", "tlbflush-ext", "ipi"}.isdisjoint(labels)
    assert {"relaxed", "time", "reset", "base", "synic2"} <= labels


def test_hv_cpuid_from_a_vcpu_fd_on_older_kernels(install_kernel):
    kernel = install_kernel(hv_cpuid_on="vcpu")
    result = probe_kvm(KVM)
    assert result.ok, result.reason
    assert result.facts.hv_cpuid_via == "vcpu"
    # the real kernel created the VM and vCPU the query ran on
    assert kvm_ioctl.KVM_CREATE_VM in [r for r, _ in kernel.calls]
    assert kvm_ioctl.KVM_CREATE_VCPU in [r for r, _ in kernel.calls]
    assert "evmcs" in hyperv_labels(collect(kvm_only()).labels)


def test_without_hv_cpuid_the_legacy_table_decides(install_kernel):
    install_kernel(hv_cpuid_on=None)
    result = probe_kvm(KVM)
    assert result.facts.hv_cpuid is None
    labels = hyperv_labels(collect(kvm_only()).labels)
    assert labels == {"base", "time", "vpindex", "tlbflush", "ipi", "synic", "synic2", "frequencies",
                      "reset", "runtime", "synictimer", "reenlightenment",  # the original twelve
                      "relaxed", "vapic", "evmcs"}  # announced by caps alone


def test_legacy_table_needs_the_msr_as_well_as_the_cap(install_kernel):
    install_kernel(hv_cpuid_on=None, extra_msrs=[0x40000003, 0x40000010])
    labels = hyperv_labels(collect(kvm_only()).labels)
    # no VP_INDEX/SCONTROL/TSC_FREQUENCY/STIMER0/REENLIGHTENMENT MSRs
    assert labels == {"base", "time", "tlbflush", "ipi", "reset", "runtime", "relaxed", "vapic", "evmcs"}


def test_hv_cpuid_refused_falls_back_to_the_legacy_table(hyperv_kernel):
    hyperv_kernel.fail = {kvm_ioctl.KVM_GET_SUPPORTED_HV_CPUID: errno.EINVAL}
    result = probe_kvm(KVM)
    assert result.ok and result.facts.hv_cpuid is None
    assert "EINVAL" in result.facts.hv_cpuid_missing or "Invalid argument" in result.facts.hv_cpuid_missing
    assert "synic2" in hyperv_labels(collect(kvm_only()).labels)


# --- failures: never an exception, always a one-line reason -----------------

@pytest.mark.parametrize("request_name, code, status", [
    ("KVM_CHECK_EXTENSION", errno.EIO, Status.ERROR),
    ("KVM_GET_MSR_INDEX_LIST", errno.EIO, Status.ERROR),  # EINVAL/ENOTTY: not x86 (tests/test_non_x86.py)
    ("KVM_GET_API_VERSION", errno.EIO, Status.ERROR),
    ("KVM_GET_API_VERSION", errno.EINTR, Status.ERROR),  # interrupted every time
])
def test_failing_ioctls_become_an_error_result(hyperv_kernel, request_name, code, status):
    hyperv_kernel.fail = {getattr(kvm_ioctl, request_name): code}
    result = probe_kvm(KVM)
    assert result.status is status
    assert request_name in result.reason and "\n" not in result.reason
    assert os.strerror(code) in result.reason or "interrupted" in result.reason


def test_one_eintr_is_retried(hyperv_kernel):
    hyperv_kernel.fail = {kvm_ioctl.KVM_CHECK_EXTENSION: errno.EINTR}
    hyperv_kernel.fail_times = 1
    assert probe_kvm(KVM).ok


def test_missing_device(tmp_path):
    result = probe_kvm(str(tmp_path / "kvm"))
    assert result.status is Status.UNAVAILABLE and "no such device" in result.reason


def test_regular_file_is_not_a_char_device(tmp_path):
    (tmp_path / "kvm").write_text("")
    result = probe_kvm(str(tmp_path / "kvm"))
    assert result.status is Status.UNAVAILABLE and "not a character device" in result.reason


def test_char_device_that_is_not_kvm(tmp_path):
    node = tmp_path / "null"
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's major/minor
    result = probe_kvm(str(node))
    assert result.status is Status.ERROR and "not a KVM device" in result.reason


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_eacces_as_an_unprivileged_user():
    """/dev/kvm is root-only 0600 here: a real EACCES for `nobody`."""
    if os.stat(KVM).st_mode & 0o006:
        pytest.skip("/dev/kvm is world-accessible on this machine")
    # import first: this machine's interpreter lives where nobody cannot read
    code = ("import os, sys; from kvminfo.sources.kvm import probe_kvm; os.setgid(65534); os.setuid(65534); "
            "r = probe_kvm(sys.argv[1]); print(r.status.value, r.reason)")
    out = subprocess.run([sys.executable, "-c", code, KVM], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("unavailable") and "permission denied" in out.stdout


def test_nested_and_vendor_readers(tmp_path):
    (tmp_path / "nested").write_text("Y\n")
    (tmp_path / "off").write_text("0\n")
    assert read_nested((str(tmp_path / "absent"), str(tmp_path / "nested"))) is True
    assert read_nested((str(tmp_path / "off"),)) is False
    assert read_nested((str(tmp_path / "absent"),)) is None
    (tmp_path / "odd").write_text("maybe\n")  # a bool parameter prints Y or N (an int one 1 or 0): not one
    assert read_nested((str(tmp_path / "odd"),)) is None
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n")
    assert read_cpu_vendor(str(tmp_path / "cpuinfo")) == "Intel"
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n")
    assert read_cpu_vendor(str(tmp_path / "cpuinfo")) is None


def test_nested_on_becomes_a_label(tmp_path, monkeypatch):
    from kvminfo.sources import kvm as kvm_source

    (tmp_path / "nested").write_text("1\n")
    monkeypatch.setattr(kvm_source, "NESTED_PARAM_PATHS", (str(tmp_path / "nested"),))
    assert collect(kvm_only()).labels.get("feature.node.kubernetes.io/kvm-info-nested") == "true"


# x86 vendor_id strings (CPUID leaf 0) and the names kvminfo labels them with.
VENDOR_NAMES = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}


def _vendor_id(cpuinfo: str) -> str | None:
    return next((line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                 if line.partition(":")[0].strip() == "vendor_id"), None)


@pytest.mark.parametrize("vendor_id", sorted(VENDOR_NAMES))
def test_either_vendor_reaches_the_cpu_vendor_label(tmp_path, vendor_id):
    """The real /dev/kvm with /proc/cpuinfo injected at its reader: an Intel and an AMD host label alike,
    whichever vendor this machine has (issue 17: the recordings are from AMD, CI may run on Intel)."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor_id}\nmodel name\t: injected\n")
    labels = render_labels([probe_kvm(KVM, cpuinfo_path=str(cpuinfo))], [])[0]
    assert labels["feature.node.kubernetes.io/kvm-info-cpu-vendor"] == VENDOR_NAMES[vendor_id]
    assert labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"


def test_the_live_cpu_vendor_label_is_what_proc_cpuinfo_says():
    raw = _vendor_id(Path("/proc/cpuinfo").read_text())
    if raw not in VENDOR_NAMES:
        pytest.skip(f"/proc/cpuinfo vendor_id {raw!r}: not an AMD or Intel x86 host")
    assert collect(kvm_only()).labels["feature.node.kubernetes.io/kvm-info-cpu-vendor"] == VENDOR_NAMES[raw]
