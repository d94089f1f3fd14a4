"""The NFD hook (nfd-hooks/) is `kvminfo labels`: the same stdout, stderr and exit status.

Held to the CLI on the real /dev/kvm, on a missing or wrong device, on a full
disk and a closed stdout, with a usage error, and on a Hyper-V capable kernel
injected at the ioctl layer (tests/kvm_fakes.py).
"""

from __future__ import annotations

import os
import subprocess
from typing import IO

import pytest
from conftest import REPO
from kvm_fakes import HyperVKernel

from kvminfo import cli
from kvminfo.sources import ioctl as kvm_ioctl

KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
CAPS_HOOK = REPO / "nfd-hooks" / "kvm-caps-info-nfd-plugin"


def _run(argv: list[str], stdout: int | IO[str] | None = subprocess.PIPE, env: dict[str, str] | None = None,
         closed_stdout: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60, cwd="/",
                          env={**os.environ, **(env or {})}, preexec_fn=(lambda: os.close(1)) if closed_stdout else None)


@pytest.mark.parametrize("extra", [[], ["--kubevirt-names"], ["--no-kvm"], ["--kvm-device", "/nonexistent/kvm"],
                                   ["--kvm-device", "/dev/null"]], ids=lambda a: " ".join(a) or "plain")
def test_hook_and_full_cli_agree_on_this_host(extra):
    """Real /dev/kvm, or a missing path, or /dev/null (a character device that is not KVM)."""
    hooked = _run([str(CAPS_HOOK), "--no-libvirt", *extra])
    full = _run([str(KVMINFO), "labels", "--family", "caps", "--no-libvirt", *extra])
    assert (hooked.returncode, hooked.stdout, hooked.stderr) == (full.returncode, full.stdout, full.stderr)
    assert full.returncode == 0
    if extra and extra[0] == "--kvm-device":  # the device cannot be used: no labels, one line saying why
        assert full.stdout == "" and full.stderr.count("\n") == 1 and extra[1] in full.stderr
    elif extra != ["--no-kvm"]:
        assert "feature.node.kubernetes.io/kvm-info-usable=true\n" in full.stdout


def test_hook_and_full_cli_agree_when_stdout_is_a_full_disk():
    with open("/dev/full", "w") as full_disk:
        hooked = _run([str(CAPS_HOOK), "--no-libvirt"], stdout=full_disk)
        full = _run([str(KVMINFO), "labels", "--family", "caps", "--no-libvirt"], stdout=full_disk)
    assert (hooked.returncode, hooked.stderr) == (full.returncode, full.stderr)
    assert full.returncode == 1 and full.stderr == "kvminfo labels: cannot write output: No space left on device\n"


def test_hook_and_full_cli_agree_when_stdout_is_closed():
    """Started with fd 1 closed (`hook >&-`): Python's sys.stdout is None; one line, exit 1."""
    hooked = _run([str(CAPS_HOOK), "--no-libvirt"], stdout=None, closed_stdout=True)
    full = _run([str(KVMINFO), "labels", "--family", "caps", "--no-libvirt"], stdout=None, closed_stdout=True)
    assert (hooked.returncode, hooked.stderr) == (full.returncode, full.stderr)
    assert full.returncode == 1 and full.stderr == "kvminfo labels: cannot write output: stdout is closed\n"


@pytest.mark.parametrize("hv_cpuid_on", ["system", "vcpu", None])
def test_labels_on_a_hyperv_capable_kernel(monkeypatch, capsys, hv_cpuid_on):
    monkeypatch.setattr(kvm_ioctl, "ioctl", HyperVKernel(hv_cpuid_on=hv_cpuid_on))
    for extra in ([], ["--kubevirt-names"]):
        assert cli.main(["labels", "--family", "caps", "--no-libvirt", *extra]) == 0
        out = capsys.readouterr().out
        prefix = "hyperv.node.kubevirt.io/" if extra else "feature.node.kubernetes.io/kvm-info-cap-hyperv-"
        # Every Hyper-V capable kernel, with or without HV CPUID, offers these (kvm_fakes: Linux's answers).
        assert {f"{prefix}{name}=true" for name in ("base", "relaxed", "vapic", "time", "synic")} \
            <= set(out.splitlines())


def test_a_missing_device_is_one_warning_line():
    done = _run([str(CAPS_HOOK), "--no-libvirt", "--kvm-device", "/nonexistent/kvm"])
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.startswith("kvminfo WARNING: kvm unavailable: /nonexistent/kvm: no such device")
    assert done.stderr.count("\n") == 1


def test_a_usage_error_is_the_clis_one_line():
    hooked = _run([str(CAPS_HOOK), "--no-libvirt", "--kvm-device"])
    full = _run([str(KVMINFO), "labels", "--family", "caps", "--no-libvirt", "--kvm-device"])
    assert (hooked.returncode, hooked.stdout, hooked.stderr) == (full.returncode, full.stdout, full.stderr)
    assert full.returncode == 2 and full.stderr.count("\n") == 1
    assert "--kvm-device" in full.stderr and "expected one argument" in full.stderr
