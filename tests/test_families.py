"""CPU-model, host-model-feature, confidential-computing, TSC and limit families.

Conformance: every KVM recording (<domain>kvm</domain>) of libvirt's own test
data in ../shared/corpus/domcaps (libvirt 7.0, 9.0, 11.3 and git) is read here
with the test's own ElementTree code, following libvirt's documented meaning
(../shared/corpus/domcaps/FACTS.md), and compared with what the rules and
renderers publish. Kernel module parameters are real sysfs-format files in a
temporary directory (the lowest layer: the files /sys/module holds).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import CORPUS as SHARED_CORPUS
from conftest import require_real

from kvminfo.features.confidential import confidential_verdicts
from kvminfo.features.cpu_models import offered_models, parse_obsolete_list
from kvminfo.features.tsc import tsc_info
from kvminfo.labels import families
from kvminfo.labels.nfd import check_label
from kvminfo.sources.domcaps_families import family_facts, host_tsc_counter
from kvminfo.sources.kvm_params import parse_bool_param, read_confidential_params

CORPUS = SHARED_CORPUS / "domcaps"
P = "feature.node.kubernetes.io/"

# KubeVirt's DefaultObsoleteCPUModels, written out from its source
# (pkg/virt-handler/node-labeller/util/util.go, newest version): each base name and its -v1 alias.
KUBEVIRT_OBSOLETE = {
    "486", "486-v1", "pentium", "pentium-v1", "pentium2", "pentium2-v1", "pentium3", "pentium3-v1",
    "pentiumpro", "pentiumpro-v1", "coreduo", "coreduo-v1", "n270", "n270-v1", "core2duo", "core2duo-v1",
    "Conroe", "Conroe-v1", "athlon", "athlon-v1", "phenom", "phenom-v1", "qemu64", "qemu64-v1",
    "qemu32", "qemu32-v1", "kvm64", "kvm64-v1", "kvm32", "kvm32-v1", "Opteron_G1", "Opteron_G1-v1",
    "Opteron_G2", "Opteron_G2-v1",
}


def kvm_recordings() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return [p for p in sorted(CORPUS.glob("*/*.xml")) if ET.parse(p).getroot().findtext("domain") == "kvm"]


RECORDINGS = kvm_recordings()
IDS = [f"{p.parent.name}/{p.name}" for p in RECORDINGS]


@pytest.mark.corpus("domcaps")
def test_corpus_is_there() -> None:
    """The conformance tests below need the shared corpus (CI and every development machine have it)."""
    assert len(RECORDINGS) > 200, f"{CORPUS}: expected the KVM recordings of four libvirt versions"


# --- independent reading of the XML (libvirt's meaning, FACTS.md) -------------------------------

def expected_models(root: ET.Element) -> list[str]:
    """usable='yes', not deprecated='yes', not obsolete; first occurrence of a duplicated name."""
    mode = root.find("cpu/mode[@name='custom']")
    if mode is None or mode.get("supported") != "yes":
        return []
    seen: list[str] = []
    for m in mode.iter("model"):
        name = (m.text or "").strip()
        if name in seen or not name:
            continue
        seen.append(name)
    first = {}
    for m in mode.iter("model"):
        first.setdefault((m.text or "").strip(), m)
    return [n for n in seen if first[n].get("usable") == "yes" and first[n].get("deprecated") != "yes"
            and n not in KUBEVIRT_OBSOLETE]


def expected_required(root: ET.Element) -> list[str]:
    mode = root.find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") != "yes":
        return []
    return sorted({f.get("name") for f in mode.iter("feature") if f.get("policy") == "require"})


def expected_confidential(root: ET.Element) -> dict[str, str]:
    """Labels by FACTS.md 13-16 and KubeVirt's sev/sev-es rule (maxESGuests > 0)."""
    feats = root.find("features")
    out: dict[str, str] = {}
    if feats is None:
        return out
    sev = feats.find("sev")
    if sev is not None and sev.get("supported") == "yes":
        out["sev"] = "true"
        es = sev.findtext("maxESGuests")
        if es is not None and int(es) > 0:
            out["sev-es"] = "true"
    ls = feats.find("launchSecurity")
    sectypes = [v.text for v in ls.iter("value")] if ls is not None and ls.get("supported") == "yes" else []
    if "sev-snp" in sectypes and "sev-es" in out:  # SNP guests need SEV-ES (KubeVirt's rule, issue 20)
        out["sev-snp"] = "true"
    tdx = feats.find("tdx")
    if tdx is not None and tdx.get("supported") == "yes":  # only <tdx>, as KubeVirt (issue 20)
        out["tdx"] = "true"
    sgx = feats.find("sgx")
    if sgx is not None and sgx.get("supported") == "yes":
        out["sgx"] = "true"
        size = sgx.find("section_size")
        if size is not None:
            assert size.get("unit") == "KiB"  # the only unit libvirt writes for the EPC
            out["sgx-epc-bytes"] = str(int(size.text) * 1024)
    return out


# --- conformance over the corpus -----------------------------------------------------------------

@pytest.mark.corpus("domcaps")
@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_cpu_model_labels_follow_libvirt(path: Path) -> None:
    root = ET.parse(path).getroot()
    facts = family_facts(root)
    warnings: list[str] = []
    offered, _ = offered_models(facts["cpu_models"])
    labels = families.cpu_model_labels(offered, warnings)
    assert warnings == []  # every model name in libvirt's data is already a valid NFD name
    assert labels == {f"{P}kvm-info-cpu-model-{m}": "true" for m in expected_models(root)}
    for key, value in labels.items():
        check_label(key, value)


@pytest.mark.corpus("domcaps")
@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_host_model_required_feature_labels_follow_libvirt(path: Path) -> None:
    root = ET.parse(path).getroot()
    warnings: list[str] = []
    labels = families.host_model_feature_labels(family_facts(root)["host_model_required_features"], warnings)
    assert warnings == []
    assert sorted(labels) == [f"{P}kvm-info-host-model-requires-{f}" for f in expected_required(root)]
    for key, value in labels.items():
        check_label(key, value)


@pytest.mark.corpus("domcaps")
@pytest.mark.parametrize("path", RECORDINGS, ids=IDS)
def test_confidential_labels_follow_libvirt(path: Path) -> None:
    root = ET.parse(path).getroot()
    conf = family_facts(root)["confidential"]
    labels = families.confidential_labels(confidential_verdicts(conf, {}), conf["sgx"])
    assert labels == {f"{P}kvm-info-{k}": v for k, v in expected_confidential(root).items()}
    for key, value in labels.items():
        check_label(key, value)


def corpus_file(name: str) -> ET.Element:
    matches = sorted(CORPUS.glob(f"*/{name}"))
    assert matches, f"{name} not in {CORPUS}"
    return ET.parse(matches[0]).getroot()


def verdicts_by_name(root: ET.Element, params: dict[str, bool | None] | None = None) -> dict[str, tuple[str, str]]:
    conf = family_facts(root)["confidential"]
    return {v.name: (v.support.value, v.reason) for v in confidential_verdicts(conf, params or {})}


@pytest.mark.corpus("domcaps")
def test_amd_sev_recording_offers_sev_es_and_snp() -> None:
    got = verdicts_by_name(corpus_file("003b573108d8__qemu_10.0.0-q35.x86_64+amdsev.xml"))
    assert {k: s for k, (s, _) in got.items()} == {"sev": "supported", "sev-es": "supported",
                                                   "sev-snp": "supported", "tdx": "unsupported",
                                                   "sgx": "unsupported"}


@pytest.mark.corpus("domcaps")
def test_libvirt_before_10_5_cannot_say_snp_so_it_is_unknown() -> None:
    """libvirt 9.0 rendering an SEV host: <sev supported='yes'> but no <launchSecurity> element."""
    got = verdicts_by_name(ET.parse(CORPUS / "libvirt-9.0.0" / "qemu_6.0.0-q35.x86_64.xml").getroot())
    assert got["sev"][0] == "supported"
    assert got["sev-snp"] == ("unknown", "libvirt has no <launchSecurity> element (libvirt < 10.5)")


@pytest.mark.corpus("domcaps")
def test_libvirt_7_sev_without_max_es_guests_leaves_sev_es_unknown() -> None:
    got = verdicts_by_name(ET.parse(CORPUS / "libvirt-7.0.0" / "qemu_2.12.0-q35.x86_64.xml").getroot())
    assert got["sev"][0] == "supported"
    assert got["sev-es"][0] == "unknown"


@pytest.mark.corpus("domcaps")
@pytest.mark.parametrize("param, label", [("sev", "sev"), ("sev_es", "sev-es"), ("sev_snp", "sev-snp")])
def test_kvm_amd_parameter_n_vetoes_what_libvirt_offers(tmp_path: Path, param: str, label: str) -> None:
    """A kernel that switched SEV(-ES/-SNP) off (kvm_amd.<param>=N) wins over libvirt's cached answer."""
    params_dir = tmp_path / "kvm_amd" / "parameters"
    params_dir.mkdir(parents=True)
    for name in ("sev", "sev_es", "sev_snp"):
        (params_dir / name).write_text("N\n" if name == param else "Y\n")
    params = read_confidential_params(str(tmp_path))
    root = corpus_file("003b573108d8__qemu_10.0.0-q35.x86_64+amdsev.xml")
    got = verdicts_by_name(root, params)
    assert got[label][0] == "unsupported"
    assert f"kvm_amd {param}=N" in got[label][1] or label != "sev"
    conf = family_facts(root)["confidential"]
    assert f"{P}kvm-info-{label}" not in families.confidential_labels(confidential_verdicts(conf, params), None)


@pytest.mark.corpus("domcaps")
def test_kvm_intel_tdx_n_vetoes_tdx(tmp_path: Path) -> None:
    (tmp_path / "kvm_intel" / "parameters").mkdir(parents=True)
    (tmp_path / "kvm_intel" / "parameters" / "tdx").write_text("N\n")
    got = verdicts_by_name(corpus_file("0a825f910bb8__qemu_10.1.0-q35.x86_64+inteltdx.xml"),
                           read_confidential_params(str(tmp_path)))
    assert got["tdx"] == ("unsupported", "libvirt: <tdx supported='yes'>, but kvm_intel tdx=N")


def test_the_live_kernel_parameters_read_as_sysfs_shows_them() -> None:
    """Whatever vendor module this machine loads (none on kvm_pvm, kvm_amd or kvm_intel elsewhere): each
    parameter as the test reads /sys/module itself (Y/1 yes, N/0 no, absent: the kernel does not say)."""
    def shown(module: str, param: str) -> bool | None:
        path = Path("/sys/module") / module / "parameters" / param
        if not path.exists():
            return None
        return {"Y": True, "1": True, "N": False, "0": False}.get(path.read_text().strip())
    assert read_confidential_params() == {"sev": shown("kvm_amd", "sev"), "sev_es": shown("kvm_amd", "sev_es"),
                                          "sev_snp": shown("kvm_amd", "sev_snp"), "tdx": shown("kvm_intel", "tdx")}


@pytest.mark.parametrize("text, value", [("Y\n", True), ("N\n", False), ("1\n", True), ("0\n", False),
                                         ("", None), ("maybe\n", None)])
def test_module_parameter_spellings(text: str, value: bool | None) -> None:
    """bool parameters print Y/N; Linux < 5.x declared kvm_amd.sev as int and printed 1/0."""
    assert parse_bool_param(text) is value


@pytest.mark.corpus("domcaps")
def test_sgx_epc_size_from_the_tdx_recording_is_in_bytes() -> None:
    root = corpus_file("0a825f910bb8__qemu_10.1.0-q35.x86_64+inteltdx.xml")
    conf = family_facts(root)["confidential"]
    labels = families.confidential_labels(confidential_verdicts(conf, {}), conf["sgx"])
    assert labels[f"{P}kvm-info-sgx-epc-bytes"] == str(500732 * 1024)


@pytest.mark.corpus("domcaps")
def test_deprecated_models_are_left_out_with_the_reason() -> None:
    """libvirt 9.0 / QEMU 5.2: two models carry deprecated='yes' (found by the test's own reading)."""
    root = ET.parse(CORPUS / "libvirt-9.0.0" / "qemu_5.2.0-q35.x86_64.xml").getroot()
    deprecated = [(m.text or "").strip() for m in root.iter("model")
                  if m.get("deprecated") == "yes" and m.get("usable") == "yes"]
    offered, left_out = offered_models(family_facts(root)["cpu_models"])
    for name in deprecated:
        assert name not in offered
        assert left_out[name] == "deprecated by libvirt"


@pytest.mark.corpus("domcaps")
def test_operator_obsolete_list_replaces_the_default() -> None:
    root = corpus_file("003b573108d8__qemu_10.0.0-q35.x86_64+amdsev.xml")
    obsolete = parse_obsolete_list("EPYC-Genoa, EPYC-Genoa-v1  # too new for our fleet\nqemu64\n")
    offered, left_out = offered_models(family_facts(root)["cpu_models"], obsolete)
    assert "EPYC-Genoa" not in offered and left_out["EPYC-Genoa"] == "on the obsolete CPU model list"
    assert "kvm64" in offered  # not on this operator's list


def test_outside_names_are_sanitized_or_dropped_with_a_warning() -> None:
    warnings: list[str] = []
    labels = families.cpu_model_labels(["Model With Spaces", "+++", "X" * 60], warnings)
    assert labels == {f"{P}kvm-info-cpu-model-Model-With-Spaces": "true"}
    assert len(warnings) == 3


def test_tsc_prefers_libvirt_and_falls_back_to_kvm_only_when_invariant() -> None:
    caps = {"KVM_CAP_TSC_CONTROL": 0}
    from_libvirt = tsc_info({"frequency_hz": 2596134000, "scaling": False}, None, caps, host_caps_answered=True)
    assert families.tsc_labels(from_libvirt) == {f"{P}kvm-info-tsc-frequency": "2596134000",
                                                 f"{P}kvm-info-tsc-scalable": "false"}
    from_kvm = tsc_info(None, 2596134, {"KVM_CAP_TSC_CONTROL": 1}, invariant=True)
    assert families.tsc_labels(from_kvm) == {f"{P}kvm-info-tsc-frequency": "2596134000",
                                             f"{P}kvm-info-tsc-scalable": "true"}
    assert tsc_info(None, None, caps) is None
    # issue 20: no frequency without invariant TSC, and libvirt's silence is not filled in by KVM
    assert tsc_info(None, 2596134, caps, invariant=False) is None
    assert tsc_info(None, 2596134, caps, invariant=None) is None
    assert tsc_info(None, 2596134, caps, host_caps_answered=True, invariant=True) is None


def kvm_tsc_khz_and_control() -> tuple[int, int]:
    """The test's own ioctls: KVM_GET_TSC_KHZ on a throwaway vCPU, KVM_CHECK_EXTENSION(KVM_CAP_TSC_CONTROL)."""
    kvmio = 0xAE
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    try:
        control = fcntl.ioctl(fd, kvmio << 8 | 0x03, 60)  # KVM_CHECK_EXTENSION(KVM_CAP_TSC_CONTROL)
        vm = fcntl.ioctl(fd, kvmio << 8 | 0x01, 0)  # KVM_CREATE_VM
        try:
            vcpu = fcntl.ioctl(vm, kvmio << 8 | 0x41, 0)  # KVM_CREATE_VCPU
            try:
                return fcntl.ioctl(vcpu, kvmio << 8 | 0xA3, 0), control  # KVM_GET_TSC_KHZ
            finally:
                os.close(vcpu)
        finally:
            os.close(vm)
    finally:
        os.close(fd)


def test_live_libvirt_host_capabilities_counter_agrees_with_kvm(libvirt_uri: str) -> None:
    """libvirt's <counter name='tsc'> is KVM's answer: kHz x 1000, scaling = KVM_CAP_TSC_CONTROL > 0."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        require_real("/dev/kvm is not usable")
    xml = subprocess.run(["virsh", "-c", libvirt_uri, "capabilities"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    khz, control = kvm_tsc_khz_and_control()
    assert host_tsc_counter(xml) == {"frequency_hz": khz * 1000, "scaling": control > 0}
    no_counter = ET.fromstring(xml)
    for cpu in no_counter.iter("cpu"):
        for counter in cpu.findall("counter"):
            cpu.remove(counter)  # what a libvirt without TSC info (non-x86, old) writes
    assert host_tsc_counter(ET.tostring(no_counter, encoding="unicode")) is None


def test_max_vcpus_limit() -> None:
    assert families.limit_labels({"KVM_CAP_MAX_VCPUS": 1024, "KVM_CAP_NR_VCPUS": 2}) == {
        f"{P}kvm-info-max-vcpus": "1024"}
    assert families.limit_labels({"KVM_CAP_MAX_VCPUS": 0, "KVM_CAP_NR_VCPUS": 2}) == {
        f"{P}kvm-info-max-vcpus": "2"}
