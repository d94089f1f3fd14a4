"""The label families end to end: collect() over every KVM corpus recording, the live host, the
three outputs (hook stdout, feature file, NodeFeature), `kvminfo probe`'s explanations, --family
and --obsolete-cpu-models, and the NFD hook's fast path.

Expectations come from the test's own reading of the XML (tests/test_families.py, FACTS.md) and
from the test's own ioctls on /dev/kvm, never from the code under test.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import KVMINFO, REPO, require_real
from test_families import (
    CORPUS,
    IDS,
    RECORDINGS,
    expected_confidential,
    expected_models,
    expected_required,
    kvm_tsc_khz_and_control,
)

from kvminfo.collect import collect
from kvminfo.commands.options import options_for_families
from kvminfo.labels import DEFAULT_FAMILIES, FAMILIES
from kvminfo.model import ProbeOptions
from kvminfo.output.nodefeature import build_nodefeature

P = "feature.node.kubernetes.io/"
FAMILY_STEMS = ("kvm-info-cpu-model-", "kvm-info-host-model-requires-", "kvm-info-sev", "kvm-info-tdx",
                "kvm-info-sgx", "kvm-info-tsc-", "kvm-info-max-vcpus")
AMDSEV = CORPUS / "libvirt-git" / "003b573108d8__qemu_10.0.0-q35.x86_64+amdsev.xml"
CAPS_HOOK = REPO / "nfd-hooks" / "kvm-caps-info-nfd-plugin"
SAMPLE_RULES = REPO / "deploy" / "nodefeature" / "nodefeaturerule.yaml"


def family_part(labels: dict[str, str] | Any) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.removeprefix(P).startswith(FAMILY_STEMS)}


def expected_family_labels(root: ET.Element) -> dict[str, str]:
    out = {f"{P}kvm-info-cpu-model-{m}": "true" for m in expected_models(root)}
    out.update({f"{P}kvm-info-host-model-requires-{f}": "true" for f in expected_required(root)})
    out.update({f"{P}kvm-info-{k}": v for k, v in expected_confidential(root).items()})
    return out


@pytest.mark.corpus("domcaps")
@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_replayed_recording_gives_the_expected_family_labels(path: Path) -> None:
    """Every family through collect(): a replay has no KVM (--no-kvm) and no host capabilities,
    so no tsc or limits labels; the libvirt families follow the XML."""
    report = collect(options_for_families(ProbeOptions(use_kvm=False, domcaps_xml=str(path)), FAMILIES))
    assert family_part(report.labels) == expected_family_labels(ET.parse(path).getroot())
    assert report.families is not None and "tsc" in report.families.absent and "limits" in report.families.absent


@pytest.mark.corpus("domcaps")
def test_default_families_leave_out_host_model_features() -> None:
    report = collect(options_for_families(ProbeOptions(use_kvm=False, domcaps_xml=str(AMDSEV))))
    assert report.rendered_families == DEFAULT_FAMILIES and "host-model-features" not in DEFAULT_FAMILIES
    assert not [k for k in report.labels if "host-model-requires" in k]
    assert f"{P}kvm-info-cpu-model-EPYC-Genoa" in report.labels and f"{P}kvm-info-sev-snp" in report.labels


def own_ioctl(request_nr: int, arg: int) -> int:
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(fd, 0xAE << 8 | request_nr, arg)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def live_domcaps(libvirt_uri: str) -> ET.Element:
    xml = subprocess.run(["virsh", "-c", libvirt_uri, "domcapabilities", "--virttype", "kvm"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return ET.fromstring(xml)


def test_live_host_every_family(libvirt_uri: str, live_domcaps: ET.Element) -> None:
    """Any host: TSC and max vCPUs from KVM itself, the libvirt families from the daemon's own answer
    read by the test; no confidential label where libvirt offers no SEV or TDX."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        require_real("/dev/kvm is not usable")
    report = collect(options_for_families(ProbeOptions(libvirt_uri=libvirt_uri), FAMILIES))
    khz, control = kvm_tsc_khz_and_control()
    max_vcpus = own_ioctl(0x03, 66) or own_ioctl(0x03, 9)  # KVM_CHECK_EXTENSION(MAX_VCPUS), else NR_VCPUS
    expected = expected_family_labels(live_domcaps)
    expected.update({f"{P}kvm-info-tsc-frequency": str(khz * 1000),
                     f"{P}kvm-info-tsc-scalable": "true" if control > 0 else "false",
                     f"{P}kvm-info-max-vcpus": str(max_vcpus)})
    assert family_part(report.labels) == expected
    offered = [e for e in live_domcaps.iter() if e.tag in ("sev", "tdx") and e.get("supported") == "yes"]
    if not offered:
        assert not [k for k in report.labels if k.removeprefix(P).startswith(("kvm-info-sev", "kvm-info-tdx"))]


def test_probe_explains_each_absent_family(libvirt_uri: str, live_domcaps: ET.Element) -> None:
    done = subprocess.run([str(KVMINFO), "probe", "--family", "all", "--libvirt-uri", libvirt_uri],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^  (cpu-models|host-model-features|confidential|tsc|"
                                                         r"limits)\s+(.*)$", done.stdout, re.M)}
    assert set(lines) == {"cpu-models", "host-model-features", "confidential", "tsc", "limits"}
    usable = [(m.text or "").strip() for m in live_domcaps.iter("model") if m.get("usable") == "yes"]
    if usable and not expected_models(live_domcaps):  # this host: only obsolete models are usable
        assert lines["cpu-models"].startswith("absent") and "obsolete CPU model list" in lines["cpu-models"]
        for name in usable:
            assert name in lines["cpu-models"]
    sev = live_domcaps.find("features/sev")
    if sev is not None and sev.get("supported") == "no":
        assert "sev unsupported (libvirt: <sev supported='no'>)" in lines["confidential"]
    if live_domcaps.find("features/launchSecurity") is None:  # libvirt < 10.5 cannot say SEV-SNP
        assert "sev-snp unknown" in lines["confidential"]

    off = subprocess.run([str(KVMINFO), "probe", "--family", "all", "--no-libvirt"],
                         capture_output=True, text=True, timeout=60)
    assert re.search(r"^  cpu-models\s+absent\s+libvirt switched off \(--no-libvirt\)$", off.stdout, re.M)
    assert re.search(r"^  tsc\s+\d+ labels\s+\d+ Hz, .*said by kvm", off.stdout, re.M)
    hook = subprocess.run([str(KVMINFO), "probe", "--family", "caps", "--no-libvirt"],
                          capture_output=True, text=True, timeout=60)
    assert re.search(r"^  confidential\s+off\s+not asked for \(--family\)$", hook.stdout, re.M)


@pytest.mark.corpus("domcaps")
def test_three_outputs_carry_the_same_family_facts(tmp_path: Path) -> None:
    """Hook/labels stdout and the feature file print the same lines; the NodeFeature's spec.labels
    are those labels and its feature sets say the same (flags per offered model, confidential
    attributes)."""
    args = ["--no-kvm", "--domcaps-xml", str(AMDSEV), "--family", "all"]
    printed = subprocess.run([str(KVMINFO), "labels", *args], capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    out = tmp_path / "kvminfo"
    written = subprocess.run([str(KVMINFO), "features-file", "-o", str(out), *args],
                             capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr
    file_lines = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert file_lines == printed.stdout.splitlines()

    report = collect(options_for_families(ProbeOptions(use_kvm=False, domcaps_xml=str(AMDSEV)), FAMILIES))
    spec = build_nodefeature(report, "node-1", "kvminfo")["spec"]
    assert spec["labels"] == dict(line.split("=", 1) for line in printed.stdout.splitlines())
    root = ET.parse(AMDSEV).getroot()
    assert sorted(spec["features"]["flags"]["kvminfo.cpu_models"]["elements"]) == sorted(expected_models(root))
    assert sorted(spec["features"]["flags"]["kvminfo.host_model_features"]["elements"]) == expected_required(root)
    sev = root.find("features/sev")
    assert spec["features"]["attributes"]["kvminfo.confidential"]["elements"] == {
        "sev": "true", "sev_es": "true", "sev_snp": "true", "tdx": "false", "sgx": "false",
        "sev_max_guests": sev.findtext("maxGuests"), "sev_max_es_guests": sev.findtext("maxESGuests")}


def expression_holds(expression: dict[str, Any], elements: dict[str, Any], name: str) -> bool:
    """NFD's MatchExpression for the operators the SEV-SNP rule uses."""
    if expression["op"] == "Exists":
        return name in elements
    if expression["op"] == "IsTrue":
        return elements.get(name) == "true"
    raise AssertionError(f"operator {expression['op']} not evaluated here")


def rule_fires(rule: dict[str, Any], features: dict[str, Any]) -> bool:
    sets = {**features.get("flags", {}), **features.get("attributes", {})}
    return all(expression_holds(expr, sets.get(term["feature"], {}).get("elements", {}), name)
               for term in rule["matchFeatures"] for name, expr in term["matchExpressions"].items())


def sev_snp_rule() -> dict[str, Any]:
    (rules,) = [doc for doc in yaml.safe_load_all(SAMPLE_RULES.read_text()) if doc["kind"] == "NodeFeatureRule"]
    (rule,) = [r for r in rules["spec"]["rules"] if r["name"] == "kvminfo-sev-snp-guests"]
    return rule


@pytest.mark.parametrize("recording, fires", [
    (AMDSEV, True),  # launchSecurity lists sev-snp
    (CORPUS / "libvirt-git" / "0a825f910bb8__qemu_10.1.0-q35.x86_64+inteltdx.xml", False),
    (CORPUS / "libvirt-9.0.0" / "qemu_6.0.0-q35.x86_64.xml", False),  # SEV, but libvirt 9.0 cannot say SNP
])
@pytest.mark.corpus("domcaps")
def test_sample_rule_labels_sev_snp_nodes(recording: Path, fires: bool) -> None:
    """The sample NodeFeatureRule against a NodeFeature from this host's real KVM and a libvirt answer."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        require_real("/dev/kvm is not usable")
    report = collect(options_for_families(ProbeOptions(domcaps_xml=str(recording))))
    features = build_nodefeature(report, "node-1", "kvminfo")["spec"]["features"]
    assert rule_fires(sev_snp_rule(), features) is fires


@pytest.mark.corpus("domcaps")
def test_kernel_veto_reaches_the_nodefeature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kvm_amd.sev_snp=N (a real sysfs-format file) turns the SEV-SNP attribute and rule off."""
    params = tmp_path / "kvm_amd" / "parameters"
    params.mkdir(parents=True)
    (params / "sev_snp").write_text("N\n")
    import kvminfo.sources.kvm_params as kvm_params
    monkeypatch.setattr(kvm_params, "SYS_MODULE", str(tmp_path))
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        require_real("/dev/kvm is not usable")
    report = collect(options_for_families(ProbeOptions(domcaps_xml=str(AMDSEV))))
    assert f"{P}kvm-info-sev-snp" not in report.labels and f"{P}kvm-info-sev" in report.labels
    features = build_nodefeature(report, "node-1", "kvminfo")["spec"]["features"]
    assert features["attributes"]["kvminfo.confidential"]["elements"]["sev_snp"] == "false"
    assert not rule_fires(sev_snp_rule(), features)


@pytest.mark.corpus("domcaps")
def test_operator_obsolete_list_from_a_file(tmp_path: Path) -> None:
    listing = tmp_path / "obsolete"
    listing.write_text("# our fleet\nEPYC-Genoa EPYC-Genoa-v1\n")
    done = subprocess.run([str(KVMINFO), "labels", "--no-kvm", "--domcaps-xml", str(AMDSEV), "--family",
                           "cpu-models", "--obsolete-cpu-models", str(listing)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    labels = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert f"{P}kvm-info-cpu-model-EPYC-Genoa" not in labels
    assert f"{P}kvm-info-cpu-model-kvm64" in labels  # KubeVirt's default list no longer applies
    missing = subprocess.run([str(KVMINFO), "labels", "--no-kvm", "--domcaps-xml", str(AMDSEV),
                              "--obsolete-cpu-models", str(tmp_path / "nope")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1 and "Traceback" not in missing.stderr


@pytest.mark.corpus("domcaps")
def test_family_switches_and_hook_families_still_work() -> None:
    only = subprocess.run([str(KVMINFO), "labels", "--no-kvm", "--domcaps-xml", str(AMDSEV), "--family",
                           "confidential"], capture_output=True, text=True, timeout=60)
    assert only.returncode == 0, only.stderr
    assert sorted(only.stdout.splitlines()) == sorted(f"{P}kvm-info-{k}=true" for k in ("sev", "sev-es", "sev-snp"))
    caps = subprocess.run([str(KVMINFO), "labels", "--no-kvm", "--domcaps-xml", str(AMDSEV), "--family", "caps"],
                          capture_output=True, text=True, timeout=60)
    assert caps.returncode == 0 and not family_part(dict(line.split("=", 1) for line in caps.stdout.splitlines()))


def test_caps_hook_prints_no_family_label() -> None:
    """The NFD hook (--family caps --no-libvirt) prints none of the other families' labels."""
    env = {k: v for k, v in os.environ.items() if k != "KVMINFO_PYTHON"}
    done = subprocess.run([str(CAPS_HOOK), "--no-libvirt"], capture_output=True, text=True, timeout=60,
                          env=env, cwd="/")
    assert done.returncode == 0 and "feature.node.kubernetes.io/kvm-info-usable=true" in done.stdout.splitlines()
    assert not family_part(dict(line.split("=", 1) for line in done.stdout.splitlines()))


@pytest.mark.parametrize("refused", ["KVM_CREATE_VM", "KVM_GET_TSC_KHZ"])
def test_kvm_refusing_the_tsc_probe_costs_only_the_tsc_family(monkeypatch: pytest.MonkeyPatch,
                                                               refused: str) -> None:
    """A kernel or seccomp profile that refuses the throwaway VM (EPERM) or KVM_GET_TSC_KHZ (ENOTTY on
    a kernel without it): the KVM source stays ok, every other family still labels, and probe says
    why tsc is absent. Fault injected at the lowest layer (kvminfo.sources.ioctl.ioctl); every other
    ioctl goes to the real /dev/kvm."""
    import errno

    from kvminfo.sources import ioctl as kvm_ioctl
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        require_real("/dev/kvm is not usable")
    real = kvm_ioctl.ioctl
    number = getattr(kvm_ioctl, refused)

    kernel_errno = errno.EPERM if refused == "KVM_CREATE_VM" else errno.ENOTTY

    def kernel(fd: int, request: int, arg: int | bytearray = 0) -> int:
        if request == number:
            raise OSError(kernel_errno, refused)
        return real(fd, request, arg)

    monkeypatch.setattr(kvm_ioctl, "ioctl", kernel)
    report = collect(options_for_families(ProbeOptions(use_libvirt=False), FAMILIES))
    (kvm,) = [s for s in report.sources if s.name == "kvm"]
    assert kvm.ok and kvm.facts.tsc_khz is None
    assert f"{P}kvm-info-usable" in report.labels and f"{P}kvm-info-max-vcpus" in report.labels
    assert not [k for k in report.labels if "tsc" in k]
    assert report.families.absent["tsc"] == ("no TSC frequency: libvirt: libvirt switched off (--no-libvirt); "
                                             f"KVM: {refused} failed: {os.strerror(kernel_errno)}")
