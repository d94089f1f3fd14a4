"""Conformance: every recorded `virsh domcapabilities` in ../shared/corpus/domcaps.

Four folders of libvirt's own test data (libvirt 7.0.0, 9.0.0 and 11.3.0 byte-exact
from the release tarballs, newer git commits), every architecture and driver.
For each file the real CLI (`kvminfo probe --json --no-kvm --domcaps-xml FILE`,
in-process) must

- refuse a file that is not KVM's answer (`<domain>` other than `kvm`: TCG,
  hvf, bhyve, Xen) with one line and exit 2: TCG repeats the KVM probe's
  `<hyperv>` list (FACTS.md 10), so replaying it would label KVM with TCG's word;
- read every KVM file, whatever the architecture, and give the Hyper-V
  verdicts libvirt means (FACTS.md 3, 6, 10, 11, 12; shared/notes/labels.md).

The expectations are computed HERE from the XML with this module's own small
ElementTree reading and the facts below, never from kvminfo's parser or tables.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CORPUS as SHARED_CORPUS

from kvminfo.cli import main as kvminfo_main

CORPUS = SHARED_CORPUS / "domcaps"
pytestmark = pytest.mark.corpus("domcaps")  # every test here reads the corpus (conftest.require_corpus)
FOLDERS = ("libvirt-7.0.0", "libvirt-9.0.0", "libvirt-11.3.0", "libvirt-git")
# The release folders say which libvirt rendered them (README.md); the git folder spans commits.
FOLDER_VERSION = {"libvirt-7.0.0": "7.0.0", "libvirt-9.0.0": "9.0.0", "libvirt-11.3.0": "11.3.0"}

# --- facts (FACTS.md, notes/labels.md), written out independently of kvminfo ---------------

# <hyperv><enum name='features'> value -> label suffix (notes/labels.md: libvirt says
# `stimer` where the labels say `synictimer`; underscores become hyphens).
ENUM_TO_LABEL = {
    "relaxed": "relaxed", "vapic": "vapic", "vpindex": "vpindex", "runtime": "runtime", "synic": "synic",
    "stimer": "synictimer", "reset": "reset", "frequencies": "frequencies",
    "reenlightenment": "reenlightenment", "tlbflush": "tlbflush", "ipi": "ipi", "evmcs": "evmcs",
    "avic": "avic", "emsr_bitmap": "emsr-bitmap", "xmm_input": "xmm-input",
}
# Guest settings, not host capabilities: never a verdict, never a label (FACTS.md 6, 12).
GUEST_SETTINGS = {"spinlocks", "vendor_id"}
# <defaults> on/off children (libvirt >= 11.9, FACTS.md 12) -> label suffix.
DEFAULTS_TO_LABEL = {"stimer_direct": "stimer-direct", "tlbflush_direct": "tlbflush-direct",
                     "tlbflush_extended": "tlbflush-ext"}
# The libvirt release that first knew each enum value (FACTS.md 11, the domain XML
# "since" column); domcaps had no <hyperv> before 9.0.0 (FACTS.md 8).
SINCE = {
    "relaxed": "1.0.0", "vapic": "1.1.0", "vpindex": "1.3.3", "runtime": "1.3.3", "synic": "1.3.3",
    "stimer": "1.3.3", "reset": "1.3.3", "frequencies": "4.7.0", "reenlightenment": "4.7.0",
    "tlbflush": "4.7.0", "ipi": "4.10.0", "evmcs": "4.10.0", "avic": "8.10.0",
    "emsr_bitmap": "10.7.0", "xmm_input": "10.7.0",
}
FIRST_HYPERV_DOMCAPS = "9.0.0"
FEATURE_LABEL = "feature.node.kubernetes.io/kvm-info-cap-hyperv-"


def version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def knows(name: str, libvirt_version: str) -> bool:
    """A libvirt of this version could have listed ``name`` in domcaps."""
    return version_key(libvirt_version) >= max(version_key(SINCE[name]), version_key(FIRST_HYPERV_DOMCAPS))


# --- the independent reading -------------------------------------------------------------

@dataclass(frozen=True)
class Recording:
    path: Path
    domain: str
    arch: str
    verdicts: dict[str, str]  # label suffix -> "supported" | "unsupported" (libvirt's word only)


def read_recording(path: Path, libvirt_version: str | None) -> Recording:
    """libvirt's meaning of one file; ``libvirt_version`` None = a replay without one.

    Without a version, silence speaks only for names of the oldest <hyperv>
    vocabulary (libvirt 9.0.0's): a newer name may simply be unknown to the
    libvirt that wrote the file.
    """
    root = ET.parse(path).getroot()
    assert root.tag == "domainCapabilities"
    verdicts: dict[str, str] = {}
    hyperv = root.find("features/hyperv")
    if hyperv is not None:  # absent: libvirt says nothing either way (FACTS.md 3)
        listed = set()
        if hyperv.get("supported") == "yes":
            listed = {v.text.strip() for v in hyperv.findall("enum[@name='features']/value") if v.text}
        speaking_for = libvirt_version or FIRST_HYPERV_DOMCAPS
        for name, label in ENUM_TO_LABEL.items():
            if name in listed:
                verdicts[label] = "supported"
            elif knows(name, speaking_for):
                verdicts[label] = "unsupported"
        for child in hyperv.findall("defaults/*"):
            if child.tag in DEFAULTS_TO_LABEL and (child.text or "").strip() in ("on", "off"):
                verdicts[DEFAULTS_TO_LABEL[child.tag]] = "supported" if child.text.strip() == "on" else "unsupported"
    return Recording(path, (root.findtext("domain") or "").strip(), (root.findtext("arch") or "").strip(), verdicts)


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for folder in FOLDERS for p in (CORPUS / folder).glob("*.xml"))


FILES = corpus_files()


def test_the_corpus_is_there_with_all_four_folders() -> None:
    counts = {folder: len(list((CORPUS / folder).glob("*.xml"))) for folder in FOLDERS}
    # README.md of the corpus: 104, 61, 84 and 56 files.
    assert counts == {"libvirt-7.0.0": 104, "libvirt-9.0.0": 61, "libvirt-11.3.0": 84, "libvirt-git": 56}


def probe_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict | None, str]:
    status = kvminfo_main(["probe", "--json", "--no-kvm", *args])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if status == 0 else None), err


def libvirt_verdicts(report: dict) -> dict[str, str]:
    return {f["name"]: f["said_by"]["libvirt"] for f in report["features"] if "libvirt" in f["said_by"]}


def cap_labels(report: dict) -> set[str]:
    return {key for key in report["labels"] if "kvm-info-cap-hyperv-" in key}


def check_recording(capsys: pytest.CaptureFixture[str], path: Path, libvirt_version: str | None) -> None:
    expected = read_recording(path, libvirt_version)
    version_args = ["--libvirt-version", libvirt_version] if libvirt_version else []
    status, report, err = probe_json(capsys, "--domcaps-xml", str(path), *version_args)
    if expected.domain != "kvm":
        assert status == 2, f"{path}: a <domain>{expected.domain}</domain> replay was accepted"
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{path}: " in err and f"<domain>{expected.domain}</domain>" in err, err
        return
    assert status == 0, err
    libvirt = next(s for s in report["sources"] if s["name"] == "libvirt")
    assert libvirt["status"] == "ok"
    assert (libvirt["facts"]["domain_type"], libvirt["facts"]["arch"]) == ("kvm", expected.arch)
    assert libvirt_verdicts(report) == expected.verdicts, path
    supported = {name for name, said in expected.verdicts.items() if said == "supported"}
    assert cap_labels(report) == {FEATURE_LABEL + name for name in supported}, path
    for key in report["labels"]:
        assert not any(setting in key for setting in ("spinlocks", "vendor-id", "vendor_id")), key


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay_without_a_version(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    check_recording(capsys, path, None)


RELEASE_FILES = [p for p in FILES if p.parent.name in FOLDER_VERSION]


@pytest.mark.parametrize("path", RELEASE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay_with_the_libvirt_version_that_wrote_it(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    check_recording(capsys, path, FOLDER_VERSION[path.parent.name])


def test_the_corpus_covers_what_this_module_claims() -> None:
    """Guard the reading itself: the cases above really occur in the data."""
    readings = [read_recording(p, None) for p in FILES]
    archs = {r.arch for r in readings if r.domain == "kvm"}
    assert {"x86_64", "aarch64", "s390x", "ppc64", "riscv64", "loongarch64"} <= archs
    assert {"qemu", "hvf", "bhyve", "xen"} <= {r.domain for r in readings}
    with_defaults = [r for r in readings if "stimer-direct" in r.verdicts]
    assert with_defaults and all(r.path.parent.name == "libvirt-git" for r in with_defaults)
    assert any(r.verdicts.get("evmcs") == "supported" for r in readings)  # the Intel TDX host
    assert any(r.verdicts and not any(v == "supported" for v in r.verdicts.values()) for r in readings)  # +mshv
