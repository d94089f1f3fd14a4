"""parse_domcaps on recorded libvirt output and on the variants libvirt can produce."""

from __future__ import annotations

import pytest
from conftest import DOMCAPS_FIXTURES

from kvminfo import cli
from kvminfo.features.hyperv import libvirt_evidence
from kvminfo.model import Support
from kvminfo.sources.domcaps import DomcapsError, parse_domcaps
from kvminfo.sources.libvirt_facts import HostModel

S, U = Support.SUPPORTED, Support.UNSUPPORTED

VIRT_MANAGER = DOMCAPS_FIXTURES / "virt-manager-kvm-x86_64-latest.xml"
THIS_HOST_KVM = DOMCAPS_FIXTURES / "this-host-kvm.xml"
THIS_HOST_TCG = DOMCAPS_FIXTURES / "this-host-qemu-tcg.xml"

HYPERV_BLOCK_THIS_HOST = """    <hyperv supported='yes'>
      <enum name='features'>
        <value>spinlocks</value>
        <value>vendor_id</value>
      </enum>
    </hyperv>
"""


def this_host_with_hyperv_block(replacement: str) -> str:
    """this-host-kvm.xml with its <hyperv> element replaced (the edit stays visible here)."""
    text = THIS_HOST_KVM.read_text()
    assert HYPERV_BLOCK_THIS_HOST in text, "fixture changed: update HYPERV_BLOCK_THIS_HOST"
    return text.replace(HYPERV_BLOCK_THIS_HOST, replacement)


def test_virt_manager_host_offers_fifteen_enlightenments() -> None:
    facts = parse_domcaps(VIRT_MANAGER.read_text())
    assert facts.hyperv == [
        "relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset",
        "vendor_id", "frequencies", "reenlightenment", "tlbflush", "ipi", "evmcs", "avic",
    ]
    assert facts.hyperv_supported is True
    assert facts.host_model == HostModel(model="Skylake-Client-IBRS", vendor="Intel")
    assert facts.max_vcpus == 4096
    assert facts.domain_type == "kvm" and facts.arch == "x86_64"
    assert (facts.sev, facts.sgx, facts.tdx) == (False, False, False)
    assert len(facts.custom_models) == 28  # usable='yes' in the recording
    assert facts.custom_models[-2:] == ["Broadwell-noTSX", "486"]  # document order kept


def test_this_host_offers_only_the_two_kernel_independent_ones() -> None:
    facts = parse_domcaps(THIS_HOST_KVM.read_text())
    assert facts.hyperv == ["spinlocks", "vendor_id"]
    assert facts.host_model == HostModel(model="kvm64", vendor="AMD")
    assert facts.max_vcpus == 255
    assert facts.custom_models == ["pentium3", "pentium2", "pentium", "486"]
    assert facts.hyperv_defaults == {}


def test_tcg_recording_reports_its_domain_type() -> None:
    facts = parse_domcaps(THIS_HOST_TCG.read_text())
    assert facts.domain_type == "qemu"
    assert facts.host_model == HostModel(model="EPYC", vendor="AMD")


def test_no_hyperv_element_means_unknown_not_unsupported() -> None:
    facts = parse_domcaps(this_host_with_hyperv_block(""))  # libvirt < 9.0 has no <hyperv>
    assert facts.hyperv is None
    assert facts.hyperv_supported is None


def test_hyperv_supported_no_means_none_supported() -> None:
    # A real shape: libvirt's FORMAT_PROLOGUE (src/conf/domain_capabilities.c) writes <hyperv supported='no'/>.
    facts = parse_domcaps(this_host_with_hyperv_block("    <hyperv supported='no'/>\n"))
    assert facts.hyperv == []
    assert facts.hyperv_supported is False


LIBVIRT_11_9 = DOMCAPS_FIXTURES / "libvirt-git-ace61064-qemu_11.1.0-q35.x86_64.xml"  # real <defaults>


def test_libvirt_11_9_defaults_are_read_as_libvirt_writes_them() -> None:
    """Issue 9 case 1: libvirt writes <defaults> children as text; kvminfo read an invented
    <stimer_direct supported='yes'/> shape, so stimer-direct/tlbflush-direct/tlbflush-ext stayed unknown."""
    facts = parse_domcaps(LIBVIRT_11_9.read_text())
    assert facts.hyperv_defaults == {"spinlocks": 4095, "stimer_direct": True, "tlbflush_direct": True,
                                        "tlbflush_extended": True, "vendor_id": "Linux KVM Hv"}
    said = libvirt_evidence(facts)["libvirt"]
    assert (said["stimer-direct"], said["tlbflush-direct"], said["tlbflush-ext"]) == (S, S, S)
    assert "spinlocks" not in said and "vendor-id" not in said  # guest settings, not host features


def test_defaults_off_means_unsupported() -> None:
    # The same real file with one value switched (libvirt writes virTristateSwitch "on"/"off").
    text = LIBVIRT_11_9.read_text()
    assert text.count("<tlbflush_direct>on</tlbflush_direct>") == 1
    facts = parse_domcaps(text.replace("<tlbflush_direct>on</tlbflush_direct>", "<tlbflush_direct>off</tlbflush_direct>"))
    assert facts.hyperv_defaults["tlbflush_direct"] is False
    assert libvirt_evidence(facts)["libvirt"]["tlbflush-direct"] is U


def test_libvirt_11_9_replay_labels_the_defaults_features(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["labels", "--no-kvm", "--domcaps-xml", str(LIBVIRT_11_9)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("stimer-direct", "tlbflush-direct", "tlbflush-ext", "emsr-bitmap", "xmm-input", "avic"):
        assert f"feature.node.kubernetes.io/kvm-info-cap-hyperv-{name}=true" in lines, name


def test_sev_supported_yes_is_reported() -> None:
    # libvirt 9.0.0's own SEV element (tests/domaincapsdata/qemu_6.0.0-q35.x86_64.xml), not a partial one.
    sev = ("<sev supported='yes'><cbitpos>47</cbitpos><reducedPhysBits>1</reducedPhysBits>"
           "<maxGuests>59</maxGuests><maxESGuests>450</maxESGuests></sev>")
    text = THIS_HOST_KVM.read_text().replace("<sev supported='no'/>", sev)
    assert parse_domcaps(text).sev is True


@pytest.mark.parametrize("cut", [100, 4000, -20])
def test_truncated_xml_is_a_clear_error_naming_the_file(cut: int) -> None:
    text = VIRT_MANAGER.read_text()[:cut]
    with pytest.raises(DomcapsError) as err:
        parse_domcaps(text, source="recorded.xml")
    message = str(err.value)
    assert message.startswith("recorded.xml: not valid domain capabilities XML: ")
    assert "line" in message  # expat's position, so the operator can find the cut
    assert "\n" not in message


def test_wrong_root_is_rejected() -> None:
    with pytest.raises(DomcapsError, match=r"caps\.xml: .*root element is <capabilities>, expected <domainCapabilities>"):
        parse_domcaps("<capabilities><host/></capabilities>", source="caps.xml")


def test_empty_text_is_rejected() -> None:
    with pytest.raises(DomcapsError, match="not valid domain capabilities XML"):
        parse_domcaps("")


@pytest.mark.parametrize("value", ["²", "9" * 5000])
def test_defaults_value_that_is_not_a_plain_number_stays_text(value: str) -> None:
    """Found by the soak fuzzer: str.isdigit() accepts '²' and int() refuses it (and 5000 digits)."""
    text = VIRT_MANAGER.read_text().replace("</hyperv>", f"<defaults><spinlocks>{value}</spinlocks></defaults></hyperv>", 1)
    assert parse_domcaps(text).hyperv_defaults == {"spinlocks": value}
