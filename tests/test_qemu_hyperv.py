"""FACTS.md 7: behind a QEMU older than 6.1.0, libvirt (before 11.2.0) may leave supported
Hyper-V enlightenments out of domcaps' <hyperv> list, so its silence says nothing there.

The live libvirt reports its hypervisor's version (virConnectGetVersion); this machine's
QEMU is newer than 6.1.0, so an older one is injected at the lowest layer only: the
number libvirt-python's getVersion returns. Everything else is the real daemon's answer.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest
from conftest import CORPUS, daemon_versions, virsh
from kvm_fakes import HyperVKernel

from kvminfo.collect import collect
from kvminfo.features.hyperv import libvirt_evidence, libvirt_findings
from kvminfo.features.hyperv_tables import LIBVIRT_NAMES
from kvminfo.model import ProbeOptions, Support
from kvminfo.sources import ioctl as kvm_ioctl
from kvminfo.sources.domcaps import parse_domcaps
from kvminfo.sources.libvirt import ask_libvirt

RECORDING = CORPUS / "domcaps" / "libvirt-9.0.0" / "qemu_8.0.0-q35.x86_64.xml"  # has <hyperv supported='yes'>


def _listed_xml(text: str) -> set[str]:
    """The <hyperv><enum name='features'> values, read with ElementTree (not kvminfo's parser)."""
    root = ET.fromstring(text)
    return {v.text or "" for v in root.findall("./features/hyperv/enum[@name='features']/value")}


def _listed(path) -> set[str]:
    return _listed_xml(path.read_text())


def test_the_live_connection_reports_the_qemu_version_virsh_reports(libvirt_uri):
    _, qemu_version = daemon_versions(libvirt_uri)
    result = ask_libvirt(libvirt_uri)
    assert result.ok and result.facts.qemu_version == qemu_version


@pytest.mark.corpus("domcaps/libvirt-9.0.0")
def test_behind_qemu_older_than_6_1_an_unlisted_name_says_nothing():
    domcaps = parse_domcaps(RECORDING.read_text(), source=str(RECORDING))
    listed = _listed(RECORDING)
    assert listed  # the recording does list names
    old = libvirt_findings(domcaps, "9.0.0", qemu_version="6.0.0")
    new_enough = libvirt_findings(domcaps, "9.0.0", qemu_version="6.1.0")
    for libvirt_name, feature in LIBVIRT_NAMES.items():
        if feature is None:  # spinlocks, vendor_id: guest settings
            continue
        if libvirt_name in listed:
            assert old[feature][0] is Support.SUPPORTED and new_enough[feature][0] is Support.SUPPORTED
        else:
            assert old[feature][0] is Support.UNKNOWN and "QEMU 6.0.0 is older than 6.1.0" in old[feature][1]
    # The evidence (what combine() weighs) drops the silences: only what libvirt lists stays.
    assert libvirt_evidence(domcaps, "9.0.0", "6.0.0")["libvirt"] == {
        feature: Support.SUPPORTED for name, feature in LIBVIRT_NAMES.items() if feature and name in listed}
    # From QEMU 6.1.0 on, or with no QEMU version (a replay), the rule changes nothing.
    assert new_enough == libvirt_findings(domcaps, "9.0.0") == libvirt_findings(domcaps, "9.0.0", qemu_version=None)
    assert any(said is Support.UNSUPPORTED for said, _ in new_enough.values())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@pytest.mark.parametrize("qemu", [6_000_000, 7_002_000])
def test_an_old_qemu_no_longer_vetoes_what_the_kernel_offers(monkeypatch, libvirt_uri, qemu):
    """A Hyper-V capable kernel behind this host's real libvirtd, whatever its version: libvirt's silence
    vetoes each enlightenment it knows, except behind a QEMU older than 6.1.0 with a libvirt older than
    11.2.0 (FACTS.md 7; from 11.2.0 on libvirt cannot run such a QEMU, so the note no longer applies)."""
    libvirt_version, _ = daemon_versions(libvirt_uri)  # read through virsh, not through the code under test
    listed_by_virsh = _listed_xml(virsh(libvirt_uri, "domcapabilities", "--virttype", "kvm"))
    monkeypatch.setattr(kvm_ioctl, "ioctl", HyperVKernel())
    monkeypatch.setattr(libvirt.virConnect, "getVersion", lambda self: qemu)
    report = collect(ProbeOptions(libvirt_uri=libvirt_uri, families=("caps",)))
    libvirt_result = report.source("libvirt")
    assert libvirt_result is not None and libvirt_result.ok
    assert set(libvirt_result.facts.domcaps.hyperv) == listed_by_virsh
    synic = next(f for f in report.features if f.name == "synic")
    silence_says_nothing = qemu < 6_001_000 and _version(libvirt_version) < (11, 2, 0)
    if "synic" in listed_by_virsh:  # a libvirt on a Hyper-V capable kernel: its yes agrees with the kernel's
        assert synic.support is Support.SUPPORTED and synic.said_by["libvirt"] is Support.SUPPORTED
    elif silence_says_nothing:
        assert synic.support is Support.SUPPORTED and "libvirt" not in synic.said_by
        assert "feature.node.kubernetes.io/kvm-info-cap-hyperv-synic" in report.labels
    else:
        assert synic.support is Support.UNSUPPORTED and synic.said_by["libvirt"] is Support.UNSUPPORTED
        assert "feature.node.kubernetes.io/kvm-info-cap-hyperv-synic" not in report.labels
