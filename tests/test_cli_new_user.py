"""What a new user met on a first try of the `kvminfo` CLI: each case as they ran it,
the real console script in a subprocess, against the real /dev/kvm and libvirt and the
recorded domain capabilities in ../shared/corpus."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_run import one_line, run
from conftest import CORPUS as SHARED_CORPUS
from conftest import REPO

CORPUS = SHARED_CORPUS / "domcaps" / "libvirt-11.3.0"
# libvirt's own test data: every <cpu><mode name='host-model'> says supported='no'.
NO_HOST_MODEL = ["empty.xml", "qemu_4.2.0-virt.aarch64.xml", "qemu_8.2.0-virt.aarch64.xml"]


def source_lines(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    end = lines.index("features:")
    return {line.split()[0]: line for line in lines[1:end]}


# -- 1: no Python None in probe's text -----------------------------------------------------------

@pytest.mark.corpus("domcaps/libvirt-11.3.0")
@pytest.mark.parametrize("name", NO_HOST_MODEL)
def test_probe_says_no_host_model_rather_than_none(name: str) -> None:
    path = CORPUS / name
    done = run("probe", "--no-kvm", "--domcaps-xml", str(path))
    assert done.returncode == 0, done.stderr
    libvirt = source_lines(done.stdout)["libvirt"]
    assert "None" not in libvirt, libvirt
    assert "no host-model" in libvirt
    has_vcpu_max = "<vcpu max=" in path.read_text()
    assert ("max vCPUs 512" in libvirt) == has_vcpu_max, libvirt  # aarch64 virt: <vcpu max='512'/>


# -- 2: a source no chosen family needs is not blamed on a flag nobody gave ----------------------

def test_sources_unneeded_by_the_families_say_so() -> None:
    done = run("probe", "--family", "version")
    assert done.returncode == 0, done.stderr
    lines = source_lines(done.stdout)
    for name in ("kvm", "libvirt"):
        assert "disabled" in lines[name] and "--no-" not in lines[name], lines[name]
        assert "not needed by the chosen families (version)" in lines[name]
    done = run("probe", "--family", "version", "--json")
    sources = {s["name"]: s for s in json.loads(done.stdout)["sources"]}
    assert sources["kvm"]["reason"] == sources["libvirt"]["reason"] == "not needed by the chosen families (version)"
    # the flag, when given, is still the reason
    done = run("probe", "--no-kvm", "--no-libvirt", "--json")
    sources = {s["name"]: s for s in json.loads(done.stdout)["sources"]}
    assert sources["kvm"]["reason"] == "--no-kvm" and sources["libvirt"]["reason"] == "--no-libvirt"


# -- 3: --libvirt-timeout's bounds and examples ---------------------------------------------------

def test_libvirt_timeout_zero_names_the_bounds_and_only_examples_within_them() -> None:
    done = run("labels", "--no-kvm", "--libvirt-timeout", "0")
    line = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2
    assert "greater than 0 and at most 3600 s (1h)" in line, line
    examples = line.split("e.g. ", 1)[1].split(" (see ", 1)[0]
    assert "2d" not in examples
    for example in examples.replace("(seconds)", "").split(","):
        check = run("labels", "--no-kvm", "--no-libvirt", "--libvirt-timeout", example.strip())
        assert check.returncode == 0, (example, check.stderr)


# -- 9: a usage error is one line, for every command ---------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["probe", "--family", "bogus"], "argument --family: invalid choice: 'bogus'"),
    (["labels", "--no-libvirt", "--domcaps-xml", "F"], "--domcaps-xml: not allowed with argument --no-libvirt"),
    (["features-file", "-o", "/tmp/x", "--bogus"], "unrecognized arguments: --bogus"),
    (["publish", "--retries", "x"], "argument --retries: invalid int value: 'x'"),
    (["device-plugin", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_a_usage_error_is_one_line_with_a_pointer_to_help(args: list[str], fragment: str) -> None:
    done = run(*args)
    line = one_line(done, 2, f"kvminfo {args[0]}: error: ", fragment)
    assert line.endswith(f"(see kvminfo {args[0]} --help)")
    assert done.stdout == ""


# -- 10: the dispatcher's own usage errors -------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["-v"], "-v needs a command first"),
    (["--json", "probe"], "--json needs a command first"),
    (["--version", "extra"], "--version takes no arguments"),
    (["bogus"], "unknown command 'bogus'"),
])
def test_the_dispatcher_says_what_is_missing(args: list[str], fragment: str) -> None:
    done = run(*args)
    one_line(done, 2, "kvminfo: error: ", fragment, "see kvminfo --help")
    assert done.stdout == ""


# -- 5: publish: a file that is no kubeconfig; the flags before the environment -------------------

def test_a_file_that_is_no_kubeconfig_says_so(tmp_path: Path) -> None:
    env = {"NODE_NAME": "node-1.example", "POD_NAMESPACE": "kvminfo"}
    done = run("publish", "--no-libvirt", "--kubeconfig", "/etc/passwd", "--retries", "0", env=env)
    line = one_line(done, 2, "kvminfo publish: --kubeconfig /etc/passwd: not a kubeconfig")
    assert "item assignment" not in line
    done = run("publish", "--no-libvirt", "--retries", "0", env={**env, "KUBECONFIG": "/etc/passwd"})
    one_line(done, 2, "kvminfo publish: $KUBECONFIG /etc/passwd: not a kubeconfig")


def test_publish_checks_its_flags_before_the_node_name() -> None:
    done = run("publish", "--retries", "101")  # no --node-name, no $NODE_NAME
    one_line(done, 2, "kvminfo publish: --retries 101: must be between 0 and 100")
    done = run("publish", "--interval", "0.5")
    one_line(done, 2, "kvminfo publish: --interval: '0.5' is too short")


# -- 6: features-file --output ---------------------------------------------------------------------

def test_an_empty_output_says_it_is_empty() -> None:
    done = run("features-file", "-o", "", "--no-libvirt")
    line = one_line(done, 2, "kvminfo features-file: --output is empty")
    assert "is a directory" not in line


def test_a_dotfile_output_is_written_with_a_warning(tmp_path: Path) -> None:
    target = tmp_path / ".kvminfo"
    done = run("features-file", "-o", str(target), "--no-libvirt")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "NFD skips dotfiles" in warnings[0], done.stderr
    assert "kvm-info-usable=true" in target.read_text()


def test_an_output_in_proc_fails_like_the_other_output_errors() -> None:
    # root may "access" /proc for writing, but nothing can be created there
    done = run("features-file", "-o", "/proc/kvminfo", "--no-libvirt")
    one_line(done, 2, "kvminfo features-file: --output /proc/kvminfo: cannot write in directory /proc")


# -- 4: publish --help names every feature set spec.features may hold ---------------------------

def test_publish_help_lists_every_published_feature_set(libvirt_uri: str) -> None:
    from kvminfo.collect import collect
    from kvminfo.commands.options import options_for_families
    from kvminfo.labels import FAMILIES
    from kvminfo.model import ProbeOptions
    from kvminfo.output.nodefeature import features_from_report

    helped = run("publish", "--help").stdout
    # docs/install.md's comparison of the feeds lists the raw features (its "raw features for NodeFeatureRules" row)
    row = next(line for line in (REPO / "docs" / "install.md").read_text().splitlines()
               if line.startswith("| raw features for NodeFeatureRules"))
    documented = {word.strip("`,;") for word in row.split() if word.startswith("`kvminfo.")}
    assert len(documented) >= 7, row
    for name in documented:
        assert name in helped, name
    # and what this node's real probe publishes with every family is among them
    report = collect(options_for_families(ProbeOptions(libvirt_uri=libvirt_uri, families=FAMILIES)))
    features = features_from_report(report)
    published = {name for kind in ("flags", "attributes") for name in features.get(kind, {})}
    assert published and published <= documented, published - documented


# -- 7: the writers' log lines carry a time stamp, as the device plugin's do ----------------------

TIME_STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z kvminfo "


def test_features_file_and_publish_log_lines_are_time_stamped(tmp_path: Path) -> None:
    import re

    done = run("features-file", "-o", str(tmp_path / "kvminfo"), "--no-libvirt")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and all(re.match(TIME_STAMP + "INFO: ", line) for line in lines), lines
    done = run("features-file", "-o", str(tmp_path / ".kvminfo"), "--no-libvirt")
    assert any(re.match(TIME_STAMP + "WARNING: --output ", line) for line in done.stderr.splitlines()), done.stderr
    # publish to a server that refuses the connection: its per-attempt line is stamped too
    done = run("publish", "--no-libvirt", "--node-name", "node-1.example", "--namespace", "kvminfo",
               "--retries", "1", "--kubeconfig", str(_refusing_kubeconfig(tmp_path)))
    assert done.returncode != 0
    logged = [line for line in done.stderr.splitlines() if re.search(r"kvminfo (INFO|WARNING|ERROR):", line)]
    assert logged and all(re.match(TIME_STAMP, line) for line in logged), done.stderr


def _refusing_kubeconfig(tmp_path: Path) -> Path:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: bound, then closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": f"https://127.0.0.1:{port}",
                                               "insecure-skip-tls-verify": True}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    return path


# -- 8: -v tells libvirt's step too -------------------------------------------------------------

def test_verbose_logs_libvirts_uri_version_and_time(libvirt_uri: str) -> None:
    import libvirt

    conn = libvirt.open(libvirt_uri)
    try:
        number = conn.getLibVersion()  # major * 1,000,000 + minor * 1,000 + micro
    finally:
        conn.close()
    version = f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"
    done = run("probe", "-v", "--libvirt-uri", libvirt_uri)
    assert done.returncode == 0, done.stderr
    debug = [line for line in done.stderr.splitlines() if line.startswith("kvminfo DEBUG: libvirt")]
    assert any(f"{libvirt_uri} is libvirt {version}" in line for line in debug), done.stderr
    assert any("domain capabilities" in line and " ms" in line for line in debug), done.stderr
    assert any(line.startswith(f"kvminfo DEBUG: libvirt at {libvirt_uri}: ok in ") for line in debug), done.stderr


# -- 11: --obsolete-cpu-models replaces KubeVirt's default list, as KubeVirt's obsoleteCPUModels does --

@pytest.mark.corpus("domcaps/libvirt-11.3.0")
def test_an_obsolete_cpu_model_file_replaces_the_default_list(tmp_path: Path) -> None:
    recorded = CORPUS / "qemu_10.0.0-q35.x86_64.xml"  # offers qemu64 and Nehalem, both usable='yes'
    listed = tmp_path / "obsolete.txt"
    listed.write_text("Nehalem\n")
    replay = ["labels", "--no-kvm", "--domcaps-xml", str(recorded), "--family", "cpu-models"]
    default = run(*replay).stdout
    assert "cpu-model-Nehalem=true" in default and "cpu-model-qemu64=true" not in default
    own = run(*replay, "--obsolete-cpu-models", str(listed))
    assert own.returncode == 0, own.stderr
    assert "cpu-model-Nehalem=true" not in own.stdout
    assert "cpu-model-qemu64=true" in own.stdout  # on KubeVirt's default list, not on this one
    helped = " ".join(run("labels", "--help").stdout.split())
    assert "replaces the default list" in helped


# -- 12: the package's license is an SPDX expression, built without a deprecation warning --------

def test_the_build_declares_an_spdx_license_without_warnings(tmp_path: Path) -> None:
    import sys
    import zipfile

    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "project.license` as a TOML table is deprecated" not in done.stdout + done.stderr
    wheel = next(tmp_path.glob("kvminfo-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
