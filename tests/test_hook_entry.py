"""The NFD hook's light entry point (kvminfo.hook) gives exactly what `kvminfo labels` gives.

Its fast path reads the hook's usual options without argparse and probes
without logging or dataclasses; these tests hold it to the full CLI: the same
ProbeOptions as argparse builds, the same stdout, stderr and exit status on the
real /dev/kvm, on a missing or wrong device, on a full disk, and on a Hyper-V
capable kernel injected at the ioctl layer (tests/kvm_fakes.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import IO

import pytest
from conftest import REPO
from kvm_fakes import HyperVKernel

from kvminfo import cli, hook
from kvminfo.commands.labels import build_parser
from kvminfo.options import probe_options_from_args
from kvminfo.probe_options import options_for_families
from kvminfo.sources import ioctl as kvm_ioctl

KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
CAPS_HOOK = REPO / "nfd-hooks" / "kvm-caps-info-nfd-plugin"
# What the fast path must not import (each costs milliseconds of every hook run; bench/bench_hook.py).
NOT_ON_THE_FAST_PATH = ("argparse", "logging", "dataclasses", "inspect", "typing", "kvminfo.options",
                        "kvminfo.commands", "libvirt", "xml", "json")

FAST_FORMS = [
    ["--family", "caps", "--no-libvirt"],
    ["--family=caps", "--no-libvirt"],
    ["--no-libvirt", "--family", "caps", "--family", "caps"],
    ["--family", "caps", "--no-libvirt", "--kubevirt-names"],
    ["--family", "caps", "--no-libvirt", "--kvm-device", "/dev/kvm"],
    ["--family", "caps", "--no-libvirt", "--kvm-device=/nonexistent/kvm"],
    ["--family", "caps", "--no-libvirt", "--no-kvm"],
    ["--family", "caps", "--no-libvirt", "--no-libvirt"],
]
FULL_CLI_FORMS = [
    ["--family", "caps"],  # libvirt asked
    ["--no-libvirt"],  # the default families
    ["--family", "version", "--no-libvirt"],
    ["--family", "caps", "--family", "tsc", "--no-libvirt"],
    ["--family", "caps", "--no-lib"],  # argparse's abbreviation: the full CLI reads it
    ["--family", "caps", "--no-libvirt", "-v"],
    ["--family", "caps", "--no-libvirt", "--help"],
    ["--family", "caps", "--no-libvirt", "--kvm-device"],
    ["--family", "caps", "--no-libvirt", "--kvm-device", "-x"],
    ["--family", "caps", "--no-libvirt", "--kvm-device="],
    ["--family", "caps", "--no-libvirt", "--no-libvirt=yes"],
    ["--family", "caps", "--no-libvirt", "--"],
    ["--family", "caps", "--no-libvirt", "extra"],
]


@pytest.mark.parametrize("argv", FAST_FORMS, ids=" ".join)
def test_fast_form_gives_the_options_argparse_gives(argv):
    from_argparse = options_for_families(probe_options_from_args(build_parser("kvminfo labels").parse_args(argv)))
    assert hook.hook_options(argv) == from_argparse


@pytest.mark.parametrize("argv", FULL_CLI_FORMS, ids=" ".join)
def test_any_other_form_is_left_to_the_full_cli(argv):
    assert hook.hook_options(argv) is None


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
def test_hook_and_full_cli_agree_on_a_hyperv_capable_kernel(monkeypatch, capsys, hv_cpuid_on):
    monkeypatch.setattr(kvm_ioctl, "ioctl", HyperVKernel(hv_cpuid_on=hv_cpuid_on))
    for extra in ([], ["--kubevirt-names"]):
        argv = ["--family", "caps", "--no-libvirt", *extra]
        assert hook.hook_options(argv) is not None  # the fast path is what runs here
        assert hook.main(argv) == 0
        hooked = capsys.readouterr()
        assert cli.main(["labels", *argv]) == 0
        full = capsys.readouterr()
        assert (hooked.out, hooked.err) == (full.out, full.err)
        prefix = "hyperv.node.kubevirt.io/" if extra else "feature.node.kubernetes.io/kvm-info-cap-hyperv-"
        # Every Hyper-V capable kernel, with or without HV CPUID, offers these (kvm_fakes: Linux's answers).
        assert {f"{prefix}{name}=true" for name in ("base", "relaxed", "vapic", "time", "synic")} \
            <= set(full.out.splitlines())


def test_fast_path_imports_neither_argparse_nor_logging_nor_dataclasses():
    done = _run([str(CAPS_HOOK), "--no-libvirt"], env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0 and "kvm-info-usable=true" in done.stdout
    imported = {m.group(1).strip() for m in re.finditer(r"^import time:.*\|\s*(\S.*)$", done.stderr, re.M)}
    assert {"kvminfo.hook", "kvminfo.collect", "kvminfo.sources.kvm"} <= imported  # the profile covers the probe
    assert not {m for m in imported if m in NOT_ON_THE_FAST_PATH or m.startswith(tuple(
        f"{name}." for name in NOT_ON_THE_FAST_PATH))}


def test_a_warning_on_the_fast_path_loads_logging_and_reads_as_the_cli_says_it():
    code = ("import sys; from kvminfo.hook import main; status = main(['--family', 'caps', '--no-libvirt', "
            "'--kvm-device', '/nonexistent/kvm']); print('logging' in sys.modules, file=sys.stderr); sys.exit(status)")
    done = _run([sys.executable, "-c", code])
    assert done.returncode == 0 and done.stdout == ""
    warning, loaded = done.stderr.splitlines()
    assert warning.startswith("kvminfo WARNING: kvm unavailable: /nonexistent/kvm: no such device") and loaded == "True"


def test_the_full_cli_takes_what_the_fast_path_refuses(capsys):
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, as `kvminfo labels` gives it
        hook.main(["--family", "caps", "--no-libvirt", "--kvm-device"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--kvm-device" in err and "expected one argument" in err
