"""NFD's key/value rules, hostile values, and rendering verdicts into labels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvminfo.labels.nfd import LabelError, check_label, full_key, is_denied_namespace, sanitize_value
from kvminfo.labels.render import render_labels
from kvminfo.model import FeatureVerdict, SourceResult, Status, Support
from kvminfo.sources.facts import KvmFacts
from kvminfo.sources.libvirt_facts import DomainCapabilities, HostModel, LibvirtFacts
from kvminfo.sources.whitelist_facts import WhitelistFacts

S, U = Support.SUPPORTED, Support.UNSUPPORTED


@pytest.mark.parametrize("key, value", [
    ("kvm-info-cap-hyperv-base", "true"),
    ("kvm-info-cap-hyperv-base", ""),
    ("feature.node.kubernetes.io/kvm-info-usable", "true"),
    ("profile.node.kubernetes.io/x", "y"),
    ("hyperv.node.kubevirt.io/synictimer", "true"),
    ("a" * 63, "b" * 63),
    ("x", "Skylake-Client-IBRS"),
    ("x", "a_b.c-d"),
])
def test_accepted(key, value):
    check_label(key, value)


@pytest.mark.parametrize("key, value, why", [
    ("/kvm-info-cap-hyperv-base", "true", "leading '/'"),
    ("kubernetes.io/foo", "true", "denied"),
    ("node.kubernetes.io/foo", "true", "denied"),
    ("topology.kubernetes.io/zone", "a", "denied"),
    ("a/b/c", "true", "more than one"),
    ("Bad_Prefix/x", "true", "DNS subdomain"),
    ("a" * 64, "true", "longer than 63"),
    ("-x", "true", "must be alphanumerics"),
    ("x-", "true", "must be alphanumerics"),
    ("with space", "true", "must be alphanumerics"),
    ("", "true", "must be alphanumerics"),
    ("x", "v" * 64, "value longer"),
    ("x", "Intel Xeon", "value"),
    ("x", "-lead", "value"),
    ("x", "ünïcode", "value"),
])
def test_rejected(key, value, why):
    with pytest.raises(LabelError, match=why):
        check_label(key, value)


def test_namespaces_and_default_prefix():
    assert not is_denied_namespace("feature.node.kubernetes.io")
    assert is_denied_namespace("kubernetes.io") and is_denied_namespace("sub.k8s.kubernetes.io")
    assert not is_denied_namespace("notkubernetes.io")
    # NFD v0.19 validate.go: sub-namespaces of the two allowed ones pass (FeatureLabelSubNsSuffix)
    assert not is_denied_namespace("kvm.feature.node.kubernetes.io")
    assert not is_denied_namespace("vendor.profile.node.kubernetes.io")
    assert is_denied_namespace("node.kubernetes.io") and is_denied_namespace("xfeature.node.kubernetes.io")
    check_label("kvm.feature.node.kubernetes.io/usable", "true")
    assert full_key("kvm-info-usable") == "feature.node.kubernetes.io/kvm-info-usable"
    assert full_key("hyperv.node.kubevirt.io/ipi") == "hyperv.node.kubevirt.io/ipi"


@pytest.mark.parametrize("raw, expected", [
    ("Skylake-Client-IBRS", "Skylake-Client-IBRS"),
    ("Intel Xeon (Cascadelake)", "Intel-Xeon-Cascadelake"),
    ("../../etc/passwd", "etc-passwd"),
    ("EPYC-Rome™", "EPYC-Rome"),
    ("a=b\nc", "a-b-c"),
    ("x" * 100, "x" * 63),
    ("a" * 62 + "-bc", "a" * 62),  # cut at 63 then trimmed to end alphanumeric
    ("###", None),
    ("", None),
])
def test_sanitize_value(raw, expected):
    assert sanitize_value(raw) == expected


@given(st.text(max_size=200))
def test_sanitized_values_are_always_valid(raw):
    value = sanitize_value(raw)
    if value is not None:
        check_label("kvm-info-host-model", value)


def kvm_ok(**facts) -> SourceResult:
    return SourceResult("kvm", Status.OK, "", KvmFacts(**{"api_version": 12, "nested": None, "cpu_vendor": "AMD",
                                                           "caps": {}, **facts}))


def libvirt_facts(host_model: str) -> LibvirtFacts:
    return LibvirtFacts(uri="qemu:///system", libvirt_version="9.0.0",
                        domcaps=DomainCapabilities(host_model=HostModel(model=host_model)))


def test_supported_features_become_true_labels_never_with_a_leading_slash():
    verdicts = [FeatureVerdict("base", S, {"kvm-caps": S}), FeatureVerdict("synic", U, {"kvm-caps": U}),
                FeatureVerdict("tlbflush-ext", S, {"kvm-hv-cpuid": S})]
    labels, warnings = render_labels([kvm_ok(nested=True)], verdicts)
    assert labels == {"feature.node.kubernetes.io/kvm-info-cap-hyperv-base": "true",
                      "feature.node.kubernetes.io/kvm-info-cap-hyperv-tlbflush-ext": "true",
                      "feature.node.kubernetes.io/kvm-info-usable": "true", "feature.node.kubernetes.io/kvm-info-nested": "true",
                      "feature.node.kubernetes.io/kvm-info-cpu-vendor": "AMD"}
    assert not warnings and not any(k.startswith("/") for k in labels)
    assert list(labels) == sorted(labels)


def test_every_key_is_fully_qualified():
    """Issue 9 case 5: `kvm-info-usable=true` relied on NFD's deprecated auto-prefix (bare under
    DisableAutoPrefix, NFD 0.16+); the qualified key is the same node label on every NFD from 0.10."""
    whitelist = SourceResult("kernel-whitelist", Status.OK, "", WhitelistFacts("centos", "3.10.0", ["hyperv"], "/w.json"))
    libvirt = SourceResult("libvirt", Status.OK, "", libvirt_facts("EPYC"))
    labels, _ = render_labels([kvm_ok(nested=True), libvirt, whitelist], [FeatureVerdict("base", S)])
    assert len(labels) == 6
    assert all(key.startswith("feature.node.kubernetes.io/kvm-info-") for key in labels), labels
    assert all(full_key(key) == key for key in labels)


def test_kubevirt_names():
    labels, _ = render_labels([kvm_ok()], [FeatureVerdict("synictimer", S)], kubevirt_names=True)
    assert labels["hyperv.node.kubevirt.io/synictimer"] == "true"
    assert not [k for k in labels if k.startswith("feature.node.kubernetes.io/kvm-info-cap-")]


def test_no_usable_kvm_means_no_caps_labels_whatever_libvirt_says():
    libvirt = SourceResult("libvirt", Status.OK, "", libvirt_facts("Skylake"))
    for kvm in (SourceResult("kvm", Status.UNAVAILABLE, "/dev/kvm: no such device"),
                SourceResult("kvm", Status.ERROR, "KVM_GET_API_VERSION failed")):
        labels, _ = render_labels([kvm, libvirt], [FeatureVerdict("relaxed", S, {"libvirt": S})])
        assert labels == {}


def test_no_kvm_by_choice_keeps_libvirt_labels():
    kvm = SourceResult("kvm", Status.DISABLED, "--no-kvm")
    libvirt = SourceResult("libvirt", Status.OK, "", libvirt_facts("Skylake-Client-IBRS"))
    labels, _ = render_labels([kvm, libvirt], [FeatureVerdict("relaxed", S, {"libvirt": S})])
    assert labels == {"feature.node.kubernetes.io/kvm-info-cap-hyperv-relaxed": "true",
                      "feature.node.kubernetes.io/kvm-info-host-model": "Skylake-Client-IBRS"}


@pytest.mark.parametrize("model, expected, warned", [
    ("Intel Xeon (Cascadelake)", "Intel-Xeon-Cascadelake", "sanitized"),
    ("((()))", None, "dropped"),
])
def test_hostile_libvirt_values_are_sanitized_or_dropped_with_a_warning(model, expected, warned):
    libvirt = SourceResult("libvirt", Status.OK, "", libvirt_facts(model))
    labels, warnings = render_labels([kvm_ok(), libvirt], [])
    assert labels.get("feature.node.kubernetes.io/kvm-info-host-model") == expected
    assert len(warnings) == 1 and warned in warnings[0] and model in warnings[0]


def test_version_family_alone():
    whitelist = SourceResult("kernel-whitelist", Status.OK, "",
                             WhitelistFacts("centos", "3.10.0-957.5.1.el7.x86_64", ["hyperv", "hyperv-lev2"], "/w.json"))
    labels, _ = render_labels([kvm_ok(), whitelist], [FeatureVerdict("base", S)], families=["version"])
    assert labels == {"feature.node.kubernetes.io/kvm-info-version-hyperv": "true",
                      "feature.node.kubernetes.io/kvm-info-version-hyperv-lev2": "true"}
    labels, _ = render_labels([kvm_ok(), whitelist], [FeatureVerdict("base", S)], families=["caps"])
    assert "feature.node.kubernetes.io/kvm-info-version-hyperv" not in labels
    assert "feature.node.kubernetes.io/kvm-info-cap-hyperv-base" in labels
