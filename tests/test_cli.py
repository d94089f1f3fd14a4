"""`kvminfo probe` / `kvminfo labels` as an operator runs them: the real console
script in a subprocess against the real /dev/kvm and libvirt (plus in-process
runs where a Hyper-V kernel must be injected at the ioctl layer)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import DOMCAPS_FIXTURES, KVM_CAP_HYPERV, KVMINFO, daemon_versions, kvm_check_extension, virsh
from kvm_fakes import HyperVKernel

from kvminfo import cli
from kvminfo.collect import collect
from kvminfo.labels.nfd import check_label
from kvminfo.model import ProbeOptions
from kvminfo.sources import ioctl as kvm_ioctl

HYPERV_HOST_XML = DOMCAPS_FIXTURES / "virt-manager-kvm-x86_64-latest.xml"
PROBE_OPTIONS = ["--kvm-device", "--no-kvm", "--no-libvirt", "--libvirt-uri", "--libvirt-timeout",
                 "--domcaps-xml", "--whitelist-config", "--kubevirt-names", "--verbose"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(KVMINFO), *args], capture_output=True, text=True, timeout=timeout)


def label_lines(stdout: str) -> dict[str, str]:
    labels = dict(line.split("=", 1) for line in stdout.splitlines())
    assert list(labels) == sorted(labels)  # sorted by key
    for key, value in labels.items():
        check_label(key, value)
    return labels


def assert_one_line_error(done: subprocess.CompletedProcess, *mentions: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for text in mentions:
        assert text in done.stderr


@pytest.mark.parametrize("command, extra", [("probe", ["--json"]), ("labels", ["--family"])])
def test_help_explains_every_option(command, extra):
    done = run(command, "--help")
    assert done.returncode == 0
    for option in PROBE_OPTIONS + extra:
        assert option in done.stdout, option


def test_probe_text_against_real_kvm_and_libvirt(libvirt_uri):
    done = run("probe", "--libvirt-uri", libvirt_uri)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[:2] == ["kvm", "ok"] and "API 12" in line for line in lines)
    assert any(line.split()[:2] == ["libvirt", "ok"] for line in lines)
    labels_at = lines.index("labels:")
    assert "  feature.node.kubernetes.io/kvm-info-usable=true" in lines[labels_at:]
    if kvm_check_extension(KVM_CAP_HYPERV) == 0:  # this kernel has no Hyper-V emulation (kvm_pvm)
        assert any(line.split()[:3] == ["base", "unsupported", "kvm-caps=unsupported"] for line in lines)
        assert not [line for line in lines[labels_at:] if "cap-hyperv-" in line or "hyperv.node" in line]


def libvirt_reason(libvirt_name: str, since: str, listed: set[str], version: str) -> str:
    """What probe must say for one name, from libvirt's documented rule (FACTS.md 11: a libvirt older
    than the name's since-version cannot list it, so its silence says nothing)."""
    if libvirt_name in listed:
        return f"'{libvirt_name}' listed in <hyperv>"
    if tuple(map(int, version.split("."))) < tuple(map(int, since.split("."))):
        return f"'{libvirt_name}' not listed, but it is newer ({since}) than libvirt {version}: silence says nothing"
    return f"'{libvirt_name}' not listed, and libvirt {version} knows it"


def test_probe_json_has_api_version_sources_features_provenance(libvirt_uri):
    done = run("probe", "--json", "--libvirt-uri", libvirt_uri)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["api_version"] == 12  # KVM_GET_API_VERSION: 12 on every kernel since 2.6.22 (kvm/api.rst)
    sources = {s["name"]: s for s in report["sources"]}
    assert sources["kvm"]["status"] == "ok" and sources["libvirt"]["status"] == "ok"
    assert sources["kernel-whitelist"]["status"] == "disabled"
    features = {f["name"]: f for f in report["features"]}
    # The live daemon's version and list, read through virsh: the expected reasons follow from them.
    version, _ = daemon_versions(libvirt_uri)
    listed = {v.text for v in ET.fromstring(virsh(libvirt_uri, "domcapabilities", "--virttype", "kvm"))
              .findall("./features/hyperv/enum[@name='features']/value")}
    assert features["vpindex"]["reasons"]["libvirt"] == libvirt_reason("vpindex", "1.3.3", listed, version)
    assert features["xmm-input"]["reasons"]["libvirt"] == libvirt_reason("xmm_input", "10.7.0", listed, version)
    if "silence says nothing" in features["xmm-input"]["reasons"]["libvirt"]:
        assert "libvirt" not in features["xmm-input"]["said_by"]
    if kvm_check_extension(KVM_CAP_HYPERV) == 0:  # KVM_CHECK_EXTENSION(KVM_CAP_HYPERV) read here, not by kvminfo
        assert features["vpindex"]["said_by"]["kvm-caps"] == "unsupported" and features["vpindex"]["support"] == "unsupported"
        assert features["vpindex"]["reasons"]["kvm-caps"] == "KVM_CAP_HYPERV = 0: this KVM has no Hyper-V emulation"
        assert not [k for k in report["labels"] if "cap-hyperv-" in k or k.startswith("hyperv.node")]


def test_labels_real_node(libvirt_uri):
    done = run("labels", "--libvirt-uri", libvirt_uri)
    assert done.returncode == 0, done.stderr
    labels = label_lines(done.stdout)
    assert labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"
    assert "feature.node.kubernetes.io/kvm-info-host-model" in labels  # from libvirt, sanitized
    if kvm_check_extension(KVM_CAP_HYPERV) == 0:
        assert not [k for k in labels if k.startswith("feature.node.kubernetes.io/kvm-info-cap-hyperv-")]


def test_replayed_hyperv_host_without_kvm_gives_libvirts_features():
    done = run("labels", "--no-kvm", "--domcaps-xml", str(HYPERV_HOST_XML))
    assert done.returncode == 0, done.stderr
    labels = label_lines(done.stdout)
    prefix = "feature.node.kubernetes.io/kvm-info-cap-hyperv-"
    hyperv = {k.removeprefix(prefix) for k in labels if k.startswith(prefix)}
    assert hyperv == {"relaxed", "vapic", "vpindex", "runtime", "synic", "synictimer", "reset", "frequencies",
                      "reenlightenment", "tlbflush", "ipi", "evmcs", "avic"}  # not spinlocks/vendor_id
    assert labels["feature.node.kubernetes.io/kvm-info-host-model"] == "Skylake-Client-IBRS"


def test_real_kvm_saying_no_outvotes_a_replayed_yes():
    if kvm_check_extension(KVM_CAP_HYPERV) != 0:
        pytest.skip("this kernel emulates Hyper-V (KVM_CAP_HYPERV != 0): its KVM says yes, there is no 'no' to outvote")
    done = run("probe", "--json", "--domcaps-xml", str(HYPERV_HOST_XML))
    report = json.loads(done.stdout)
    synic = next(f for f in report["features"] if f["name"] == "synic")
    assert {k: synic[k] for k in ("name", "support", "said_by")} == {
        "name": "synic", "support": "unsupported", "said_by": {"kvm-caps": "unsupported", "libvirt": "supported"}}
    assert synic["reasons"]["libvirt"] == "'synic' listed in <hyperv>"
    # KVM_CAP_HYPERV is 0 here: no Hyper-V emulation, so kvm also outvotes features its table lacks
    relaxed = next(f for f in report["features"] if f["name"] == "relaxed")
    assert relaxed["support"] == "unsupported" and relaxed["said_by"]["libvirt"] == "supported"
    assert not [k for k in report["labels"] if "cap-hyperv-" in k or k.startswith("hyperv.node")]


def test_injected_hyperv_kernel_through_the_cli(monkeypatch, capsys):
    monkeypatch.setattr(kvm_ioctl, "ioctl", HyperVKernel())
    assert cli.main(["labels", "--no-libvirt"]) == 0
    labels = label_lines(capsys.readouterr().out)
    assert labels["feature.node.kubernetes.io/kvm-info-cap-hyperv-synictimer"] == "true"
    assert labels["feature.node.kubernetes.io/kvm-info-cap-hyperv-evmcs"] == "true"
    assert cli.main(["labels", "--no-libvirt", "--kubevirt-names"]) == 0
    labels = label_lines(capsys.readouterr().out)
    assert labels["hyperv.node.kubevirt.io/synictimer"] == "true"
    assert not [k for k in labels if k.startswith("feature.node.kubernetes.io/kvm-info-cap-")]


def test_injected_kernel_and_replayed_libvirt_agree(monkeypatch, capsys):
    monkeypatch.setattr(kvm_ioctl, "ioctl", HyperVKernel())
    assert cli.main(["probe", "--json", "--domcaps-xml", str(HYPERV_HOST_XML)]) == 0
    features = {f["name"]: f for f in json.loads(capsys.readouterr().out)["features"]}
    assert features["ipi"]["said_by"] == {"kvm-hv-cpuid": "supported", "libvirt": "supported"}
    assert features["synic2"]["said_by"] == {"kvm-caps": "supported"}
    # Issue 9 case 2: this recording comes from a libvirt of unknown version (>= 9.0, lists up to avic);
    # its silence about xmm_input (known from libvirt 10.7.0) says nothing, so the kernel's yes stands.
    assert features["xmm-input"]["support"] == "supported"
    assert features["xmm-input"]["said_by"] == {"kvm-hv-cpuid": "supported"}
    # Told the file came from libvirt 10.7.0, which knows xmm_input, the same silence means no.
    assert cli.main(["probe", "--json", "--domcaps-xml", str(HYPERV_HOST_XML), "--libvirt-version", "10.7.0"]) == 0
    features = {f["name"]: f for f in json.loads(capsys.readouterr().out)["features"]}
    assert features["xmm-input"]["support"] == "unsupported"
    assert features["xmm-input"]["reasons"]["libvirt"] == "'xmm_input' not listed, and libvirt 10.7.0 knows it"


def test_libvirt_down_still_prints_kvm_labels(tmp_path):
    done = run("labels", "--libvirt-uri", f"qemu+unix:///system?socket={tmp_path}/no-such-sock")
    assert done.returncode == 0
    assert label_lines(done.stdout)["feature.node.kubernetes.io/kvm-info-usable"] == "true"
    assert len(done.stderr.strip().splitlines()) == 1 and "libvirt unavailable" in done.stderr


def test_hanging_libvirt_does_not_stop_the_kvm_source(private_libvirtd):
    private_libvirtd.pause()
    try:
        started = time.monotonic()
        report = collect(ProbeOptions(libvirt_uri=private_libvirtd.uri, libvirt_deadline_s=1.0))  # paused for ever
        elapsed = time.monotonic() - started
    finally:
        private_libvirtd.resume()
    assert report.source("libvirt").status.value == "timeout"
    assert report.source("kvm").ok and report.labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"
    assert elapsed < 20  # a hang detector: the paused daemon never answers


def test_truncated_domcaps_xml(tmp_path):
    text = HYPERV_HOST_XML.read_text()
    truncated = tmp_path / "truncated.xml"
    truncated.write_text(text[: len(text) // 2])
    for command in ("labels", "probe"):
        assert_one_line_error(run(command, "--domcaps-xml", str(truncated)), str(truncated))


def test_unreadable_inputs(tmp_path):
    assert_one_line_error(run("labels", "--domcaps-xml", str(tmp_path / "missing.xml")), "missing.xml")
    bad = tmp_path / "whitelist.json"
    bad.write_text('{"checks": [{"os": "debian", "feature": "hyperv"}]}')
    assert_one_line_error(run("labels", "--no-libvirt", "--whitelist-config", str(bad)), str(bad), "checks[0]")


@pytest.mark.parametrize("option", ["--domcaps-xml", "--whitelist-config"])
def test_endless_operator_input_is_refused_not_read_to_the_end(option):
    # /dev/zero as a replay once ran the libvirt source out of memory/time and
    # still exited 0 with the other labels.
    started = time.monotonic()
    done = run("labels", "--no-kvm", option, "/dev/zero")
    assert done.returncode == 2 and done.stdout == ""
    assert_one_line_error(done, "/dev/zero", "larger than 4 MiB")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("command", ["probe", "labels", "features-file"])
def test_no_libvirt_with_a_replay_file_is_refused(command, tmp_path):
    # The replay used to be ignored without a word under --no-libvirt.
    extra = ["-o", str(tmp_path / "f")] if command == "features-file" else []
    done = run(command, *extra, "--no-libvirt", "--domcaps-xml", str(HYPERV_HOST_XML))
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert "--domcaps-xml: not allowed with argument --no-libvirt" in done.stderr.splitlines()[-1]
    assert not list(tmp_path.iterdir())


def test_no_arguments_is_an_error_with_usage_on_stderr():
    done = run()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: kvminfo <command>") and "labels" in done.stderr
    helped = run("--help")
    assert helped.returncode == 0 and helped.stderr == "" and helped.stdout == done.stderr


def stdout_env(buffered: bool) -> dict[str, str]:
    """A real run buffers stdout (the failure surfaces at the last flush); PYTHONUNBUFFERED fails the write itself."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return env if buffered else {**env, "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", [["labels", "--no-libvirt"], ["probe", "--json", "--no-libvirt"],
                                  ["labels", "--help"], ["--version"]])
def test_full_stdout_is_one_line_exit_1(args, buffered):
    with open("/dev/full", "w") as full:
        done = subprocess.run([str(KVMINFO), *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                              env=stdout_env(buffered))
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"kvminfo{' ' + args[0] if args[0] != '--version' else ''}: "
                                        "cannot write output: No space left on device"]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_closed_pipe_is_one_line_exit_1_and_no_exception_at_exit(buffered):
    # `kvminfo labels | head -0`: the reader is gone before kvminfo writes (SIGPIPE is ignored by Python).
    process = subprocess.Popen([str(KVMINFO), "labels", "--no-libvirt"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=stdout_env(buffered))
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 1
    assert stderr.splitlines() == ["kvminfo labels: cannot write output: Broken pipe"]


# Root reads any file; without these two capabilities it meets the mode bits like anyone else.
WITHOUT_DAC_OVERRIDE = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("option, what", [("--domcaps-xml", "domain capabilities"),
                                          ("--whitelist-config", "whitelist config")])
def test_permission_denied_input_is_one_line_exit_2(tmp_path, option, what):
    unreadable = tmp_path / "mode-000"
    unreadable.write_text(HYPERV_HOST_XML.read_text() if option == "--domcaps-xml" else '{"checks": []}')
    unreadable.chmod(0)
    done = subprocess.run([*WITHOUT_DAC_OVERRIDE, str(KVMINFO), "labels", "--no-kvm", option, str(unreadable)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert_one_line_error(done, f"kvminfo labels: {unreadable}: cannot read {what}: Permission denied")


def test_bad_option_value_is_an_argparse_error_not_a_traceback():
    done = run("labels", "--libvirt-timeout", "soon")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--libvirt-timeout" in done.stderr.splitlines()[-1]


@pytest.mark.parametrize("value", ["inf", "1e308", "nan", "-1", "0", "3601"])
def test_libvirt_timeout_must_be_finite_positive_and_bounded(value):
    # inf and 1e308 once overflowed thread.join() into a traceback; -1 and nan were taken.
    done = run("labels", f"--libvirt-timeout={value}")
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert f"--libvirt-timeout: {value!r}" in done.stderr.splitlines()[-1]
    assert "greater than 0 and at most 3600 s" in done.stderr.splitlines()[-1]


def test_libvirt_timeout_at_the_bound_is_accepted():
    assert run("labels", "--libvirt-timeout", "3600").returncode == 0


def test_missing_device_labels_nothing_and_says_why(tmp_path):
    done = run("labels", "--no-libvirt", "--kvm-device", str(tmp_path / "kvm"))
    assert done.returncode == 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "no such device" in done.stderr


def test_a_tcg_recording_is_refused_as_a_replay():
    """Issue 9 case 4: `<domain>qemu</domain>` (TCG) replayed as KVM's answer gave kvm-info-host-model=EPYC,
    where this host's KVM says kvm64."""
    tcg = DOMCAPS_FIXTURES / "this-host-qemu-tcg.xml"
    for command in (["labels", "--no-kvm"], ["probe"], ["labels"]):
        done = run(*command, "--domcaps-xml", str(tcg))
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert f"{tcg}: <domain>qemu</domain> is not KVM's answer" in done.stderr


def test_libvirt_9_0_does_not_veto_names_it_never_heard_of(monkeypatch, capsys):
    """Issue 9 case 2: HV CPUID says xmm-input (and emsr-bitmap) supported; libvirt 9.0.0 lists only
    spinlocks and vendor_id, and knows neither name (both arrived in 10.7.0). Whatever this machine's
    libvirt is, the rule is checked on a 9.0.0 recording, replayed with the version that wrote it."""
    monkeypatch.setattr(kvm_ioctl, "ioctl", HyperVKernel())
    recording = DOMCAPS_FIXTURES / "this-host-kvm.xml"  # libvirt 9.0.0 (tests/fixtures/README.md)
    assert cli.main(["probe", "--json", "--domcaps-xml", str(recording), "--libvirt-version", "9.0.0"]) == 0
    report = json.loads(capsys.readouterr().out)
    libvirt = next(s for s in report["sources"] if s["name"] == "libvirt")
    assert libvirt["facts"]["libvirt_version"] == "9.0.0" and libvirt["facts"]["hyperv"] == ["spinlocks", "vendor_id"]
    features = {f["name"]: f for f in report["features"]}
    for name in ("xmm-input", "emsr-bitmap"):
        assert features[name]["support"] == "supported", features[name]
        assert "libvirt" not in features[name]["said_by"]
        assert "newer (10.7.0) than libvirt 9.0.0" in features[name]["reasons"]["libvirt"]
    assert "feature.node.kubernetes.io/kvm-info-cap-hyperv-xmm-input" in report["labels"]
    # a name libvirt 9.0.0 knows and does not list is still its "no"
    assert features["avic"]["said_by"]["libvirt"] == "unsupported" and features["avic"]["support"] == "unsupported"
