"""collect(): sources run concurrently; one failing or hanging never stops the others."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import DOMCAPS_FIXTURES

from kvminfo import collect as report
from kvminfo.common.errors import KvminfoError
from kvminfo.model import ProbeOptions, Status
from kvminfo.sources import base as sources_base
from kvminfo.sources import ioctl as kvm_ioctl

HYPERV_HOST_XML = str(DOMCAPS_FIXTURES / "virt-manager-kvm-x86_64-latest.xml")


def test_a_wedged_kvm_ioctl_times_out_and_libvirt_still_counts(monkeypatch):
    release = threading.Event()

    def wedged(fd, request, arg=0):  # a kernel that never returns from the first ioctl
        release.wait(10)
        raise OSError(5, "released")

    monkeypatch.setattr(kvm_ioctl, "ioctl", wedged)
    monkeypatch.setattr(sources_base, "LOCAL_SOURCE_DEADLINE_S", 0.3)
    try:
        started = time.monotonic()
        result = report.collect(ProbeOptions(domcaps_xml=HYPERV_HOST_XML))
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.source("kvm").status is Status.TIMEOUT and result.source("kvm").reason == "kvm did not answer within 0.3s"
    assert result.source("libvirt").ok
    assert elapsed < 8.0  # the wedged ioctl is released only after 10 s: the 0.3 s deadline held
    assert result.labels == {}  # KVM enabled but not usable: no labels from libvirt alone


def test_a_bug_in_one_source_is_reported_not_raised(monkeypatch, tmp_path):
    from kvminfo.sources import kernel_whitelist

    def broken(config_path):
        raise RuntimeError("bug")

    monkeypatch.setattr(kernel_whitelist, "probe_kernel_whitelist", broken)
    result = report.collect(ProbeOptions(use_libvirt=False, whitelist_config=str(tmp_path / "w.json")))
    whitelist = result.source("kernel-whitelist")
    assert whitelist.status is Status.ERROR and whitelist.reason == "internal error: RuntimeError: bug"
    assert result.source("kvm").ok and result.labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"


def test_operator_error_in_a_source_is_raised_after_the_others(tmp_path):
    bad = tmp_path / "w.json"
    bad.write_text("{")
    with pytest.raises(KvminfoError, match="not valid JSON"):
        report.collect(ProbeOptions(use_libvirt=False, whitelist_config=str(bad)))


def test_sources_are_reported_in_a_fixed_order_with_timings():
    result = report.collect(ProbeOptions(use_libvirt=False))
    assert [s.name for s in result.sources] == ["kvm", "libvirt", "kernel-whitelist"]
    assert [s.status for s in result.sources][1:] == [Status.DISABLED, Status.DISABLED]
    assert result.source("kvm").elapsed_ms > 0


def test_no_libvirt_probes_where_libvirt_python_and_kubernetes_are_not_installed():
    """A node image without libvirt-python or the kubernetes client still labels with --no-libvirt."""
    import subprocess
    import sys

    # A None entry in sys.modules makes the import raise ImportError, as where the package is missing.
    code = ("import sys; sys.modules['libvirt'] = sys.modules['kubernetes'] = None\n"
            "from kvminfo.collect import collect; from kvminfo.model import ProbeOptions\n"
            "r = collect(ProbeOptions(use_libvirt=False)); print(r.source('libvirt').status.value, r.warnings)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "disabled ()" and "libvirt" not in done.stderr
