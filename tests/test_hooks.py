"""The NFD hook executables, run for real as NFD's source.d runner would."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from kvminfo.labels.nfd import check_label
from kvminfo.sources.kernel_whitelist import read_kernel_version, read_os_id

CAPS_HOOK = REPO / "nfd-hooks" / "kvm-caps-info-nfd-plugin"
VERSION_HOOK = REPO / "nfd-hooks" / "kvm-version-info-nfd-plugin"
# pyenv's Pythons older than 3.11 (the development machines have them; a fresh one may not).
OLD_PYTHONS = sorted(Path("/root/.pyenv/versions").glob("3.1[0]*/bin/python")) + sorted(
    Path("/root/.pyenv/versions").glob("3.[89].*/bin/python"))


def run(hook: Path | str, *args: str, env: dict[str, str] | None = None,
        cwd: Path | str = "/") -> subprocess.CompletedProcess:
    """The hook as NFD starts it (no KVMINFO_PYTHON of this shell's), from ``cwd``, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if k != "KVMINFO_PYTHON"}
    return subprocess.run([str(hook), *args], capture_output=True, text=True, timeout=60,
                          env={**environ, **(env or {})}, cwd=cwd)


def labels_of(stdout: str) -> dict[str, str]:
    labels = dict(line.split("=", 1) for line in stdout.splitlines())
    for key, value in labels.items():
        check_label(key, value)
        assert not key.startswith("/")
    return labels


def test_hooks_are_sh_wrappers_that_exec_python_directly():
    for hook in (CAPS_HOOK, VERSION_HOOK):
        assert os.access(hook, os.X_OK)
        text = hook.read_text()  # the version hook is a symlink: one script, family by name
        assert text.startswith("#!/bin/sh\n")
        assert ".pyenv/shims" not in text and "/.venv/bin/python" in text and 'exec "$python"' in text


def test_version_hook_reached_through_another_symlink_keeps_its_family(tmp_path):
    link = tmp_path / "kvm-version-info-nfd-plugin"
    link.symlink_to(VERSION_HOOK)
    done = run(link, "--whitelist-config", str(whitelist_for_this_host(tmp_path, read_os_id("/etc/os-release"))))
    assert done.stdout == "feature.node.kubernetes.io/kvm-info-version-hyperv=true\n"


def test_caps_hook_fast_path_real_kvm():
    done = run(CAPS_HOOK, "--no-libvirt")
    assert done.returncode == 0 and done.stderr == ""
    labels = labels_of(done.stdout)
    assert labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"
    assert not [k for k in labels if "hyperv" in k]  # this kernel has no Hyper-V emulation


def test_options_from_the_environment_as_nfd_passes_no_arguments(tmp_path):
    # A libvirt that cannot be reached would add its own line: only --no-libvirt keeps it silent.
    unreachable = f"qemu+unix:///system?socket={tmp_path}/no-libvirt-sock"
    env = {"KVMINFO_HOOK_OPTIONS": f"--no-libvirt --kvm-device {tmp_path}/kvm --libvirt-uri {unreachable}"}
    done = run(CAPS_HOOK, env=env)
    assert done.returncode == 0 and done.stdout == ""
    assert f"{tmp_path}/kvm: no such device" in done.stderr
    assert done.stderr.count("\n") == 1 and "libvirt" not in done.stderr  # --no-libvirt reached the command


def test_caps_hook_with_libvirt_and_kubevirt_names(libvirt_uri):
    done = run(CAPS_HOOK, "--libvirt-uri", libvirt_uri, "--kubevirt-names")
    assert done.returncode == 0, done.stderr
    labels = labels_of(done.stdout)
    assert "feature.node.kubernetes.io/kvm-info-host-model" in labels and labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"
    assert not [k for k in labels if k.startswith("feature.node.kubernetes.io/kvm-info-version-")]


def test_caps_hook_without_device_prints_nothing_and_says_why(tmp_path):
    done = run(CAPS_HOOK, "--no-libvirt", "--kvm-device", str(tmp_path / "kvm"))
    assert done.returncode == 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and str(tmp_path / "kvm") in done.stderr


def test_hook_run_through_a_symlink_in_a_hook_dir(tmp_path):
    """NFD's source.d usually holds a symlink; ../.venv is found next to the real file."""
    (tmp_path / "source.d").mkdir()
    link = tmp_path / "source.d" / "kvm-caps-info-nfd-plugin"
    link.symlink_to(CAPS_HOOK)
    done = run(link, "--no-libvirt")
    assert done.returncode == 0, done.stderr
    assert "feature.node.kubernetes.io/kvm-info-usable=true" in done.stdout.splitlines()


def test_hook_run_from_a_symlinked_hook_directory(tmp_path):
    """The hook directory itself a symlink to nfd-hooks/: the checkout's venv is still found (by its
    physical path; "<link>/../.venv" would be folded by Python to a directory without pyvenv.cfg)."""
    (tmp_path / "hookdir").symlink_to(REPO / "nfd-hooks")
    done = run(tmp_path / "hookdir" / "kvm-caps-info-nfd-plugin", env={"KVMINFO_HOOK_OPTIONS": "--no-libvirt"})
    assert done.returncode == 0, done.stderr
    assert "feature.node.kubernetes.io/kvm-info-usable=true" in done.stdout.splitlines()


def test_a_kvminfo_folder_in_the_working_directory_is_not_imported(tmp_path):
    (tmp_path / "kvminfo").mkdir()
    (tmp_path / "kvminfo" / "__init__.py").write_text("raise ImportError('the working directory was imported')\n")
    done = run(CAPS_HOOK, "--no-libvirt", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "feature.node.kubernetes.io/kvm-info-usable=true" in done.stdout.splitlines()


def test_a_relative_hook_path_ignores_cdpath(tmp_path):
    """dash's cd searches $CDPATH for a relative directory and prints where it went: the checkout
    must be found next to the script all the same, and stdout must hold labels only."""
    (tmp_path / "nfd-hooks").mkdir()
    done = run("nfd-hooks/kvm-caps-info-nfd-plugin", "--no-libvirt", env={"CDPATH": str(tmp_path)}, cwd=REPO)
    assert done.returncode == 0, done.stderr
    labels_of(done.stdout)  # every line a label
    assert "feature.node.kubernetes.io/kvm-info-usable=true" in done.stdout.splitlines()


@pytest.mark.skipif(not OLD_PYTHONS, reason="no Python older than 3.11 on this machine (pyenv)")
def test_a_python_older_than_3_11_without_kvminfo_fails_in_one_line():
    """The wrapper passes no option such a Python refuses (3.11's -P): it gets as far as saying what is wrong."""
    done = run(CAPS_HOOK, "--no-libvirt", env={"KVMINFO_PYTHON": str(OLD_PYTHONS[0])})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "kvminfo is not importable" in done.stderr


@pytest.mark.parametrize("name", ["absent/python3", "."])
def test_a_kvminfo_python_that_is_no_executable_fails_in_one_line(tmp_path, name):
    """docs/cli.md, "Exit status": 1 for a hook that finds no Python, one line naming it, not the
    shell's own `exec: ...: not found` and its status 127."""
    python = tmp_path / name
    done = run(CAPS_HOOK, "--no-libvirt", env={"KVMINFO_PYTHON": str(python)})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"kvm-caps-info-nfd-plugin: KVMINFO_PYTHON={python} is not an executable file"]


def test_options_from_the_environment_are_not_file_name_patterns(tmp_path):
    (tmp_path / "--no-kvm").touch()  # a file a glob would turn "--no-kv*" into
    done = run(CAPS_HOOK, env={"KVMINFO_HOOK_OPTIONS": "--no-libvirt --no-kv*"}, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""  # argparse refuses the word as it is
    assert "--no-kv*" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_kvminfo_python_overrides_the_interpreter(tmp_path):
    marker = tmp_path / "used"
    shim = tmp_path / "python"
    shim.write_text(f'#!/bin/sh\necho "$@" > {marker}\nexec {REPO}/.venv/bin/python "$@"\n')
    shim.chmod(0o755)
    done = run(CAPS_HOOK, "--no-libvirt", env={"KVMINFO_PYTHON": str(shim)})
    assert done.returncode == 0 and "feature.node.kubernetes.io/kvm-info-usable=true" in done.stdout
    assert marker.read_text().split()[-2:] == ["caps", "--no-libvirt"]


def whitelist_for_this_host(tmp_path: Path, os_id: str) -> Path:
    kernel = read_kernel_version("/proc/version")
    path = tmp_path / "kvm-version-info.json"
    path.write_text(json.dumps({"checks": [
        {"os": os_id, "feature": "hyperv", "kernelminver": "3.10", "kernelmaxver": kernel},
        {"os": os_id, "feature": "hyperv-lev2", "kernelminver": f"{int(kernel.split('.')[0]) + 1}.0"},  # newer
    ]}))
    return path


def test_version_hook_prints_only_version_labels(tmp_path):
    config = whitelist_for_this_host(tmp_path, read_os_id("/etc/os-release"))
    done = run(VERSION_HOOK, "--whitelist-config", str(config))
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == "feature.node.kubernetes.io/kvm-info-version-hyperv=true\n"


def test_version_hook_other_os_is_not_whitelisted(tmp_path):
    config = whitelist_for_this_host(tmp_path, "some-other-os")
    done = run(VERSION_HOOK, "--whitelist-config", str(config))
    assert done.returncode == 0 and done.stdout == ""


def test_version_hook_without_config_prints_nothing_and_says_why():
    done = run(VERSION_HOOK)
    if Path("/etc/kubernetes/node-feature-discovery/source.d/conf/kvm-version-info.json").exists():
        return  # a configured node: covered by the tests above
    assert done.returncode == 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "whitelist" in done.stderr


def test_version_hook_bad_config_fails_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"checks": [{"os": "debian"}]}')
    done = run(VERSION_HOOK, "--whitelist-config", str(bad))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "checks[0].feature" in done.stderr


def test_interpreter_without_kvminfo_fails_in_one_line():
    """A host's Debian python3 has no kvminfo: one line and a failing exit, no traceback."""
    done = run(CAPS_HOOK, "--no-libvirt", env={"KVMINFO_PYTHON": "/usr/bin/python3"})
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "kvminfo is not importable" in done.stderr and "Traceback" not in done.stderr
