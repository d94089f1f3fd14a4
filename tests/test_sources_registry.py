"""Adding a source is one module plus one registry line (README, "Layout"): a source
registered that way reaches every output with no other file touched."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime

import kernel_release_source
import pytest

from kvminfo import cli
from kvminfo.collect import collect, probe_deadline_s
from kvminfo.model import ProbeOptions, Status
from kvminfo.output.base import StdoutLines
from kvminfo.output.featurefile import parse_feature_file, render_feature_file
from kvminfo.output.nodefeature import build_nodefeature
from kvminfo.sources import registry
from kvminfo.sources.base import LOCAL_SOURCE_DEADLINE_S
from kvminfo.sources.facts import KERNEL_WHITELIST, KVM, LIBVIRT

# What the kernel says through another door (uname(2)), not through the source under test.
RELEASE = os.uname().release


@pytest.fixture
def with_kernel_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one registry line."""
    line = registry.SourceEntry("kernel-release", "kernel_release_source", lambda options: options.use_kvm, "--no-kvm")
    monkeypatch.setattr(registry, "SOURCES", (*registry.SOURCES, line))


def test_the_built_in_sources_are_registered_in_report_order() -> None:
    assert [entry.name for entry in registry.SOURCES] == [KVM, LIBVIRT, KERNEL_WHITELIST]
    assert all(entry.load().name == entry.name for entry in registry.SOURCES)


def test_an_added_source_reaches_the_report_and_every_output(with_kernel_release: None) -> None:
    report = collect(ProbeOptions(use_libvirt=False))
    assert [s.name for s in report.sources] == [KVM, LIBVIRT, KERNEL_WHITELIST, "kernel-release"]
    added = report.source("kernel-release")
    assert added is not None and added.ok and added.facts.to_json() == {"release": RELEASE}
    assert report.labels[kernel_release_source.LABEL] == RELEASE
    assert report.labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"  # the built-in sources are untouched

    # feature file
    text = render_feature_file(report.labels, datetime.now(UTC)).decode()
    assert parse_feature_file(text).labels[kernel_release_source.LABEL] == RELEASE
    # NodeFeature: its label and its attribute set kvminfo.<name>
    body = build_nodefeature(report, "node-1", "kvminfo")
    assert body["spec"]["labels"][kernel_release_source.LABEL] == RELEASE
    assert body["spec"]["features"]["attributes"]["kvminfo.kernel-release"] == {"elements": {"release": RELEASE}}


def test_an_added_source_in_the_cli_outputs(with_kernel_release: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--no-libvirt", "--json"]) == 0
    probed = json.loads(capsys.readouterr().out)
    added = next(s for s in probed["sources"] if s["name"] == "kernel-release")
    assert added["status"] == "ok" and added["facts"] == {"release": RELEASE}

    assert cli.main(["probe", "--no-libvirt"]) == 0
    line = next(li for li in capsys.readouterr().out.splitlines() if li.strip().startswith("kernel-release"))
    assert line.split()[1] == "ok" and line.endswith(f"kernel {RELEASE}")

    assert StdoutLines().write(collect(ProbeOptions(use_libvirt=False)))
    assert f"{kernel_release_source.LABEL}={RELEASE}\n" in capsys.readouterr().out


def test_an_added_source_switched_off_is_reported_disabled_and_never_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A switched-off source's module is never run: one that cannot even be loaded (a None
    entry in sys.modules makes its import raise ImportError) does not break the probe."""
    line = registry.SourceEntry("broken-source", "broken_source_module", lambda options: options.use_kvm, "--no-kvm")
    monkeypatch.setattr(registry, "SOURCES", (*registry.SOURCES, line))
    monkeypatch.setitem(sys.modules, "broken_source_module", None)
    report = collect(ProbeOptions(use_kvm=False, use_libvirt=False))
    added = report.source("broken-source")
    assert added is not None and added.status is Status.DISABLED and added.reason == "--no-kvm"
    assert not [label for label in report.labels if "broken" in label]


def test_the_probe_deadline_counts_an_added_source(with_kernel_release: None) -> None:
    assert probe_deadline_s(ProbeOptions(use_libvirt=False)) == LOCAL_SOURCE_DEADLINE_S
    assert probe_deadline_s(ProbeOptions(libvirt_deadline_s=30.0)) == 30.0


def test_a_misnamed_registry_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = registry.SourceEntry("uptime", "kernel_release_source", lambda options: True, "")
    with pytest.raises(RuntimeError, match="registered as 'uptime'"):
        line.load()
