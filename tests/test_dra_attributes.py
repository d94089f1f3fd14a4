"""The kvm device's attributes: from the labels' own probe, typed, within the API's
limits, a missing fact a missing attribute; and the start-time check that refuses what
the API server would.

Expected values are read from the recorded documents themselves (libvirt's
domcapabilities XML: its <hyperv> enum, <launchSecurity> sectypes, host-model
<model>), with libvirt's names mapped as libvirt's domain XML documentation
("Hypervisor features") names them, never from the driver.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dra_apiserver_standin import slice_problems

from kvminfo_dra.attributes import DRIVER, HYPERV_GROUPS, hyperv_value, kvm_attributes
from kvminfo_dra.devices import build_slices, node_devices
from kvminfo_dra.upstream import ALL_FEATURES, KvminfoError, ProbeOptions, Support, collect, options_for_families
from kvminfo_dra.validation import check_slices

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "domcaps"
CORPUS = REPO.parent / "shared" / "corpus" / "domcaps"
FAMILIES = ["caps", "cpu-models", "confidential", "tsc", "limits"]
# libvirt's <hyperv> feature names -> kvminfo's (formatdomain.rst "Hypervisor features": stimer is
# the SynIC timers; spinlocks and vendor_id are settings, not enlightenments a KVM offers)
LIBVIRT_TO_KVMINFO = {"relaxed": "relaxed", "vapic": "vapic", "vpindex": "vpindex", "runtime": "runtime",
                      "synic": "synic", "stimer": "synictimer", "reset": "reset", "frequencies": "frequencies",
                      "reenlightenment": "reenlightenment", "tlbflush": "tlbflush", "ipi": "ipi", "evmcs": "evmcs",
                      "avic": "avic", "emsr_bitmap": "emsr-bitmap", "xmm_input": "xmm-input"}


def _replay(path: Path, libvirt_version: str) -> dict[str, dict[str, object]]:
    options = ProbeOptions(use_kvm=False, domcaps_xml=str(path), replay_libvirt_version=libvirt_version)
    return kvm_attributes(collect(options_for_families(options, FAMILIES)))


def _corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing on CI")
        pytest.skip(f"{path}: no ../shared corpus beside this clone")
    return path


def _listed(attributes: dict[str, dict[str, object]]) -> set[str]:
    """Enlightenments the attributes call supported (plain ,name, entries)."""
    return {n for a in HYPERV_GROUPS if a in attributes for n in str(attributes[a]["string"]).strip(",").split(",")
            if n and not n.startswith("?")}


def test_every_enlightenment_is_in_exactly_one_group() -> None:
    grouped = [n for names in HYPERV_GROUPS.values() for n in names]
    assert sorted(grouped) == sorted(ALL_FEATURES) and len(grouped) == len(set(grouped))


def test_group_values_fit_64_characters_in_every_case() -> None:
    worst = 0
    for names in HYPERV_GROUPS.values():
        for verdicts in itertools.product(list(Support), repeat=len(names)):
            value = hyperv_value(names, dict(zip(names, verdicts, strict=True)))
            worst = max(worst, len(value or ""))
    assert worst <= 64


def test_tri_state_in_a_group_value() -> None:
    names = ("synic", "synic2", "synictimer")
    assert hyperv_value(names, {"synic": Support.SUPPORTED, "synic2": Support.UNSUPPORTED,
                                "synictimer": Support.UNKNOWN}) == ",synic,?synictimer,"
    assert hyperv_value(names, {n: Support.UNSUPPORTED for n in names}) == ""
    assert hyperv_value(names, {}) is None  # nothing known: no attribute


def test_hyperv_host_fixture_carries_what_its_xml_lists() -> None:
    path = FIXTURES / "virt-manager-kvm-x86_64-latest.xml"
    root = ET.parse(path).getroot()
    listed = {v.text for v in root.findall("./features/hyperv/enum[@name='features']/value")}
    expected = {LIBVIRT_TO_KVMINFO[n] for n in listed if n in LIBVIRT_TO_KVMINFO}
    attributes = _replay(path, "9.0.0")
    assert _listed(attributes) == expected
    model = root.find("./cpu/mode[@name='host-model']/model")
    assert model is not None and attributes["hostModel"] == {"string": model.text}
    assert attributes["arch"] == {"string": root.findtext("arch")}
    assert "kvmApiVersion" not in attributes and "nested" not in attributes  # --no-kvm: unknown, so absent


def test_sev_snp_host_from_the_corpus() -> None:
    path = _corpus("libvirt-11.3.0/qemu_10.0.0-q35.x86_64+amdsev.xml")
    root = ET.parse(path).getroot()
    sectypes = {v.text for v in root.findall("./features/launchSecurity/enum[@name='sectype']/value")}
    assert "sev-snp" in sectypes  # the document says so; the attribute must follow
    attributes = _replay(path, "11.3.0")
    assert attributes["sevSnp"] == {"bool": True} and attributes["sev"] == {"bool": True}
    assert attributes["libvirtVersion"] == {"version": "11.3.0"}


def test_unknown_confidential_support_is_no_attribute() -> None:
    """libvirt < 10.5 has no <launchSecurity>: SEV-SNP is unknown, never false."""
    attributes = _replay(FIXTURES / "this-host-kvm.xml", "9.0.0")
    assert "sevSnp" not in attributes and "tdx" not in attributes


def test_live_node_attributes_are_within_the_api_limits() -> None:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm")
    attributes = kvm_attributes(collect(options_for_families(ProbeOptions(), FAMILIES)))
    # KVM_GET_API_VERSION is 12 on every Linux since 2.6.22 (Documentation/virt/kvm/api.rst 4.1)
    assert attributes["kvmApiVersion"] == {"int": 12}
    body = build_slices("node-a", 1, node_devices(attributes, {"tun": ("tun", "/dev/net/tun")}))[0]
    assert slice_problems(body, "v1") == []  # the stand-in's own reading of the rules
    check_slices([body])


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a.update({"a" * 33: {"bool": True}}), "C identifier of at most 32"),
    (lambda a: a.update({"hostModel": {"string": "x" * 65}}), "longer than 64"),
    (lambda a: a.update({f"extra{i}": {"int": i} for i in range(31)}), "at most 32"),
    (lambda a: a.update({"qemuVersion": {"version": "7.2"}}), "not a semantic version"),
])
def test_start_refuses_a_slice_the_server_would(change, message) -> None:  # type: ignore[no-untyped-def]
    attributes: dict[str, dict[str, object]] = {"kvmApiVersion": {"int": 12}}
    change(attributes)
    body = build_slices("node-a", 1, node_devices(attributes, {}))[0]
    assert slice_problems(body, "v1"), "the stand-in must refuse it too"
    with pytest.raises(KvminfoError, match=message) as raised:
        check_slices([body])
    assert "\n" not in str(raised.value)


def test_driver_name_is_a_short_dns_subdomain() -> None:
    assert len(DRIVER) <= 63
    body = build_slices("node-a", 1, (), driver="Bad_Driver")[0]
    with pytest.raises(KvminfoError, match="driver name"):
        check_slices([body])


@pytest.mark.parametrize("recording", ["virt-manager-kvm-x86_64-latest.xml", "this-host-kvm.xml"])
def test_attributes_and_labels_say_the_same(recording: str) -> None:
    """One source of facts: what `kvminfo labels` prints for a host and what its kvm device carries agree."""
    argv = [sys.executable, "-m", "kvminfo", "labels", "--no-kvm", "--domcaps-xml", str(FIXTURES / recording),
            "--libvirt-version", "9.0.0", "--family", "all"]
    lines = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    labels = dict(line.split("=", 1) for line in lines)
    prefix = "feature.node.kubernetes.io/kvm-info-"
    hyperv = {k.removeprefix(prefix + "cap-hyperv-") for k, v in labels.items()
              if k.startswith(prefix + "cap-hyperv-") and v == "true"}
    attributes = _replay(FIXTURES / recording, "9.0.0")
    assert _listed(attributes) == hyperv
    if prefix + "host-model" in labels:
        assert attributes["hostModel"] == {"string": labels[prefix + "host-model"]}
    for label, attribute in (("sev", "sev"), ("sev-es", "sevEs"), ("sev-snp", "sevSnp"), ("tdx", "tdx"), ("sgx", "sgx")):
        if labels.get(prefix + label) == "true":
            assert attributes[attribute] == {"bool": True}
