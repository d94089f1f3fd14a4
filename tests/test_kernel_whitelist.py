"""Kernel whitelist (kvm-version-info): config validation, version ordering, labels."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, KVMINFO

from kvminfo.collect import collect
from kvminfo.common.errors import KvminfoError
from kvminfo.model import ProbeOptions, Status
from kvminfo.sources.kernel_whitelist import (
    kernel_version_key,
    probe_kernel_whitelist,
    read_kernel_version,
    whitelisted_features,
)

CENTOS_KERNEL = "Linux version 3.10.0-957.9.5.el7.x86_64 (mockbuild@kbuilder) (gcc version 4.8.5) #1 SMP\n"


def host(tmp_path: Path, os_id: str = "centos", proc_version: str = CENTOS_KERNEL) -> Path:
    (tmp_path / "os-release").write_text(f'NAME="Some OS"\nID="{os_id}"\nVERSION_ID="7"\n')
    (tmp_path / "version").write_text(proc_version)
    return tmp_path


def write_config(tmp_path: Path, checks, **extra) -> str:
    config = {"osrelease": "os-release", "kernversion": "version", "checks": checks, **extra}
    path = tmp_path / "kvm-version-info.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_kernel_versions_order_by_every_number():
    assert kernel_version_key("3.10.0-957.5.1.el7.x86_64") == (3, 10, 0, 957, 5, 1)
    assert kernel_version_key("3.10.0-957.9.5.el7") > kernel_version_key("3.10.0-957.5.1.el7")
    assert kernel_version_key("4.20.13-200.fc29.x86_64") > kernel_version_key("4.9")
    assert kernel_version_key("6.18.44-fc-v669") == (6, 18, 44)
    with pytest.raises(ValueError):
        kernel_version_key("el7")


def test_min_max_and_os(tmp_path):
    checks = [
        {"os": "centos", "feature": "hyperv", "kernelminver": "3.10.0-957.5.1.el7.x86_64"},
        {"os": "centos", "feature": "hyperv-lev2", "kernelmaxver": "3.10.0-900"},
        {"os": "fedora", "feature": "hyperv-lev2", "kernelminver": "3.0"},
    ]
    assert whitelisted_features(checks, "centos", "3.10.0-957.9.5.el7.x86_64") == ["hyperv"]
    assert whitelisted_features(checks, "centos", "3.10.0-862.el7") == ["hyperv-lev2"]
    assert whitelisted_features(checks, "fedora", "5.0") == ["hyperv-lev2"]
    assert whitelisted_features(checks, "debian", "6.1") == []


def test_probe_reads_host_files_relative_to_the_config(tmp_path):
    host(tmp_path)
    path = write_config(tmp_path, [{"os": "centos", "feature": "hyperv", "kernelminver": "3.10.0-957.5.1"},
                                   {"os": "centos", "feature": "hyperv-lev2", "kernelminver": "4.0"}])
    result = probe_kernel_whitelist(path)
    assert result.ok and result.facts.whitelisted == ["hyperv"]
    assert result.facts.os_id == "centos" and result.facts.kernel_version.startswith("3.10.0-957.9.5")
    labels = collect(ProbeOptions(use_kvm=False, use_libvirt=False, whitelist_config=path)).labels
    assert labels == {"feature.node.kubernetes.io/kvm-info-version-hyperv": "true"}


def test_this_machine_real_host_files(tmp_path):
    """No overrides: the real /etc/os-release and /proc/version."""
    kernel = read_kernel_version("/proc/version")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"checks": [{"os": "debian", "feature": "hyperv", "kernelminver": "1.0",
                                            "kernelmaxver": kernel}]}))
    result = probe_kernel_whitelist(str(path))
    os_id = result.facts.os_id
    assert result.facts.whitelisted == (["hyperv"] if os_id == "debian" else [])


def test_host_file_the_config_names_must_exist(tmp_path):
    path = write_config(tmp_path, [{"os": "centos", "feature": "hyperv", "kernelminver": "3.0"}])
    with pytest.raises(KvminfoError) as err:
        probe_kernel_whitelist(path)  # os-release/version not created
    assert str(err.value).startswith(f"{path}: osrelease: ") and "No such file" in str(err.value)


def test_unreadable_default_host_file_is_unavailable_not_fatal(tmp_path, monkeypatch):
    from kvminfo.sources import kernel_whitelist

    monkeypatch.setattr(kernel_whitelist, "DEFAULT_OS_RELEASE", str(tmp_path / "no-os-release"))
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"checks": [{"os": "debian", "feature": "hyperv", "kernelminver": "3.0"}]}))
    result = probe_kernel_whitelist(str(path))
    assert result.status is Status.UNAVAILABLE and "no-os-release" in result.reason


@pytest.mark.parametrize("text, culprit", [
    ("{", "not valid JSON"),
    ("[]", "(top level)"),
    ('{"checks": {}}', "checks"),
    ('{"checks": [{"feature": "hyperv", "kernelminver": "3"}]}', "checks[0].os"),
    ('{"checks": [{"os": "centos", "feature": "hyperv"}]}', "kernelminver and/or kernelmaxver"),
    ('{"checks": [{"os": "centos", "feature": "hyperv", "kernelmaxver": "latest"}]}', "checks[0].kernelmaxver"),
    ('{"osrelease": 7, "checks": []}', "osrelease"),
    # min above max could never match: it used to be accepted without a word.
    ('{"checks": [{"os": "centos", "feature": "hyperv", "kernelminver": "3.10.0-957", "kernelmaxver": "3.10.0-862"}]}',
     "checks[0]: kernelminver '3.10.0-957' is above kernelmaxver '3.10.0-862'"),
    ('{"checks": [], "n": ' + "9" * 5000 + "}", "not usable JSON"),
    ('{"checks": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),  # RecursionError in json
])
def test_bad_config_names_file_and_field(tmp_path, text, culprit):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(KvminfoError) as err:
        probe_kernel_whitelist(str(path))
    message = str(err.value)
    assert str(path) in message and culprit in message and "\n" not in message


def test_non_utf8_config_is_an_operator_error(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"checks": [{"os": "d\x90bian", "feature": "hyperv", "kernelminver": "3"}]}')
    with pytest.raises(KvminfoError, match="not UTF-8"):
        probe_kernel_whitelist(str(path))


def test_non_utf8_host_file_named_by_the_config(tmp_path):
    host(tmp_path)
    (tmp_path / "os-release").write_bytes(b"ID=\xff\xfe\n")
    with pytest.raises(KvminfoError, match="osrelease: .*utf-8"):
        probe_kernel_whitelist(write_config(tmp_path, [{"os": "centos", "feature": "hyperv", "kernelminver": "3"}]))


def test_missing_config_is_an_operator_error(tmp_path):
    with pytest.raises(KvminfoError, match="cannot read whitelist config"):
        collect(ProbeOptions(use_kvm=False, use_libvirt=False, whitelist_config=str(tmp_path / "none.json")))


ORIGINAL_CONFIG = FIXTURES / "whitelist" / "kvm-info.json"  # the original plugin's shipped config


def labels_cli(config: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KVMINFO), "labels", "--family", "version", "--whitelist-config", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_the_original_shipped_config_is_accepted_as_is():
    """Issue 9 case 7: its `hypervL2` check made kvminfo refuse the whole file (exit 2)."""
    done = labels_cli(ORIGINAL_CONFIG)
    assert done.returncode == 0 and done.stderr == ""
    os_id = probe_kernel_whitelist(str(ORIGINAL_CONFIG)).facts.os_id
    assert os_id != "centos" and done.stdout == ""  # this machine is no CentOS: nothing whitelisted


def test_hypervL2_is_the_originals_name_for_hyperv_lev2(tmp_path):
    host(tmp_path)  # CentOS 7 with kernel 3.10.0-957.9.5, above both checks' minimum
    config = json.loads(ORIGINAL_CONFIG.read_text())
    config.update(osrelease="os-release", kernversion="version")  # the only change: point at the fake host
    path = tmp_path / "kvm-info.json"
    path.write_text(json.dumps(config))
    done = labels_cli(path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == ["feature.node.kubernetes.io/kvm-info-version-hyperv=true",
                                        "feature.node.kubernetes.io/kvm-info-version-hyperv-lev2=true"]


def test_an_unknown_feature_is_one_warning_and_the_other_checks_count(tmp_path):
    host(tmp_path)
    path = write_config(tmp_path, [{"os": "centos", "feature": "hyperv-lev3", "kernelminver": "3.0"},
                                   {"os": "centos", "feature": "hyperv", "kernelminver": "3.0"}])
    done = labels_cli(path)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["feature.node.kubernetes.io/kvm-info-version-hyperv=true"]
    warning, = done.stderr.splitlines()
    assert f"{path}: checks[0].feature: 'hyperv-lev3' is not one of hyperv, hyperv-lev2; check skipped" in warning


def test_malformed_json_stays_fatal(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(ORIGINAL_CONFIG.read_text()[:-10])
    done = labels_cli(path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and f"{path}: not valid JSON" in done.stderr
