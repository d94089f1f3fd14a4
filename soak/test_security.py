"""Security: file modes under a hostile umask, no world-writable file ever, hostile libvirt strings.

- The plugin's sockets are 0600 and its CDI specs 0644, the feature file 0644,
  whatever the umask (000 is the worst an operator's image can set).
- No world-writable file ever appears: a scanner polls the directories while
  the product writes, so a short-lived temp file would be caught too.
- CPU model/vendor strings from libvirt and /proc/cpuinfo cannot inject a
  label key or value NFD rejects, nor one that differs from their sanitized form.
"""

from __future__ import annotations

import re
import stat
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DOMCAPS_FIXTURES
from hypothesis import HealthCheck, given, settings
from kubelet_emulator import KubeletEmulator

from kvminfo.labels.nfd import sanitize_value
from kvminfo.labels.render import render_labels
from kvminfo.model import SourceResult, Status
from kvminfo.sources.kvm import probe_kvm
from soak.harness import KVMINFO, LONG, Stopwatch, label_lines, scaled, world_writable
from soak.hostile import HOSTILE_STRINGS, hostile_text
from soak.nfd_rules import nfd_rejects
from soak.plugin_rig import Layout, PluginProcess, wait_until

FAMILY = "Security"
UMASKS = (0o000, 0o022, 0o077)
RECORDED = DOMCAPS_FIXTURES / "this-host-kvm.xml"


class Scanner:
    """Polls directories for world-writable entries while the product works in them."""

    def __init__(self, *roots: Path) -> None:
        self.roots, self.found, self.scans = roots, set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scanner:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for root in self.roots:
                self.found.update(world_writable(root))
            self.scans += 1
            time.sleep(0.002)


def registered_at_least(emulator: KubeletEmulator, count: int) -> Callable[[], bool]:
    """A wait_until predicate bound to this round's emulator and count (not the loop's later ones)."""
    return lambda: len(emulator.registrations) >= count


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_plugin_sockets_and_cdi_specs_under_any_umask(short_tmp: Path, scenario) -> None:
    modes = scenario(FAMILY, "Plugin sockets 0600, CDI specs 0644 (umask 000/022/077, after restarts)",
                     "start -> registered")
    for round_, umask in enumerate(UMASKS * scaled(1, 3)):
        layout = Layout(short_tmp / f"r{round_}")
        layout.root.mkdir()
        layout.create()
        # The kubelet's own socket is the emulator's (the test's), not the product's: outside the scan.
        emulator = KubeletEmulator(layout.plugin_dir).start()
        try:
            started = time.monotonic()
            with Scanner(layout.cdi_dir) as scan, PluginProcess(layout, umask=umask) as plugin:
                registered = wait_until(registered_at_least(emulator, 2), 10.0)
                latency = time.monotonic() - started  # process start to both resources registered
                for restart in range(2):  # re-served sockets must be 0600 too
                    emulator.restart()
                    wait_until(registered_at_least(emulator, 4 + 2 * restart), 10.0)
                sockets = {p.name: _mode(p) for p in layout.plugin_sockets()}
                specs = {p.name: _mode(p) for p in layout.cdi_dir.iterdir()}
                plugin.terminate()
        finally:
            emulator.stop()
        wide = scan.found | {w for w in world_writable(layout.root) if not w.startswith(str(layout.plugin_dir / "kubelet.sock"))}
        held = (registered and len(sockets) == 2 and set(sockets.values()) == {0o600}
                and len(specs) == 2 and set(specs.values()) == {0o644} and not wide)
        modes.record(held, latency, f"umask {umask:03o}: sockets {sockets}, specs {specs}, world-writable {wide}")
    modes.check(len(UMASKS))


def test_feature_file_mode_under_any_umask(short_tmp: Path, scenario) -> None:
    modes = scenario(FAMILY, "Feature file 0644, no world-writable temp file (umask 000/022/077)",
                     "`kvminfo features-file` wall time")
    for round_, umask in enumerate(UMASKS * scaled(2, 10)):
        out_dir = short_tmp / f"f{round_}"
        out_dir.mkdir(mode=0o755)
        out_dir.chmod(0o755)  # mkdir's mode is filtered by our own umask
        with Scanner(out_dir) as scan, Stopwatch() as sw:
            done = subprocess.run([str(KVMINFO), "features-file", "-o", str(out_dir / "kvminfo"), "--no-libvirt"],
                                  capture_output=True, text=True, timeout=60, umask=umask)
        entries = {p.name: _mode(p) for p in out_dir.iterdir()}
        modes.record(done.returncode == 0 and entries == {"kvminfo": 0o644} and not scan.found, sw.elapsed,
                     f"umask {umask:03o}: exit {done.returncode} {done.stderr.strip()!r}, entries {entries}, "
                     f"world-writable seen {scan.found}")
    modes.check(len(UMASKS))


# ---- hostile strings from libvirt --------------------------------------------------------------------------

XML_CHAR = lambda c: c in "\t\n\r" or 0x20 <= ord(c) <= 0xD7FF or 0xE000 <= ord(c) <= 0xFFFD or ord(c) >= 0x10000  # noqa: E731


def _domcaps_with(model: str, vendor: str) -> bytes:
    """The recorded document with libvirt's host-model CPU renamed (what a hostile or broken libvirt says)."""
    root = ET.fromstring(RECORDED.read_text())
    mode = root.find("cpu/mode[@name='host-model']")
    mode.find("model").text = model
    mode.find("vendor").text = vendor
    return ET.tostring(root, encoding="unicode").encode()


def _carried_by_xml(text: str) -> bool:
    """libvirt speaks XML 1.0: a string outside its character range can never arrive from it."""
    return all(XML_CHAR(c) for c in text)


def _judge_labels(labels: dict[str, str], raw_model: str, baseline: set[str]) -> str:
    """'' when the labels are safe, else why not. ``baseline``: the keys the recorded document gives."""
    problems = [f"{k}={v!r}: {p}" for k, v in labels.items() for p in [nfd_rejects(k, v)] if p]
    injected = set(labels) - baseline
    if injected:
        problems.append(f"injected keys {sorted(injected)}")
    expected = sanitize_value(raw_model.strip())  # domcaps strips the element's text; then the documented sanitizing
    got = labels.get("feature.node.kubernetes.io/kvm-info-host-model")
    if got != expected:
        problems.append(f"host-model {got!r}, sanitized form {expected!r}")
    if got is not None:
        # Independent of the product: only characters from the raw string, or '-' for what was replaced.
        rest = iter(raw_model)
        if not all(c == "-" or any(c == r for r in rest) for c in got):
            problems.append(f"host-model {got!r} has characters not taken in order from {raw_model!r}")
    return "; ".join(problems)


@pytest.fixture(scope="module")
def baseline_keys(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Label keys of the recorded document through the CLI (no KVM): hostile names may only remove one."""
    path = tmp_path_factory.mktemp("baseline") / "domcaps.xml"
    path.write_bytes(_domcaps_with("kvm64", "AMD"))
    done = subprocess.run([str(KVMINFO), "labels", "--no-kvm", "--domcaps-xml", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    keys = set(label_lines(done.stdout))
    assert "feature.node.kubernetes.io/kvm-info-host-model" in keys
    return keys


def test_hostile_libvirt_cpu_names_through_the_cli(short_tmp: Path, baseline_keys: set[str], scenario) -> None:
    hostile = scenario(FAMILY, "Hostile libvirt CPU model/vendor via `kvminfo labels`", "`kvminfo labels` wall time")
    path = short_tmp / "domcaps.xml"
    for raw in [s for s in HOSTILE_STRINGS if _carried_by_xml(s)]:
        path.write_bytes(_domcaps_with(raw, raw))
        with Stopwatch() as sw:
            done = subprocess.run([str(KVMINFO), "labels", "--no-kvm", "--domcaps-xml", str(path)],
                                  capture_output=True, text=True, timeout=60)
        lines_ok = all("=" in line for line in done.stdout.splitlines())
        why = _judge_labels(label_lines(done.stdout), raw, baseline_keys) if done.returncode == 0 and lines_ok else \
            f"exit {done.returncode}, stdout {done.stdout!r}, stderr {done.stderr!r}"
        hostile.record(not why and "Traceback" not in done.stderr, sw.elapsed, f"{raw[:40]!r}: {why}")
    hostile.check(30)


def test_hostile_cpu_names_in_process(short_tmp: Path, scenario) -> None:
    """Many more hostile names: libvirt's model through the replay parser, /proc/cpuinfo's vendor through probe_kvm."""
    hostile = scenario(FAMILY, "Hostile CPU model (libvirt XML) and vendor (cpuinfo), generated", "n/a")
    xml_path, cpuinfo = short_tmp / "domcaps.xml", short_tmp / "cpuinfo"
    from kvminfo.sources.libvirt import replay_domcaps

    def labels_for(model: str, vendor: str) -> tuple[dict[str, str], SourceResult]:
        xml_path.write_bytes(_domcaps_with(model, model))
        cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\n", encoding="utf-8", errors="surrogatepass")
        libvirt = SourceResult("libvirt", Status.OK, "", replay_domcaps(str(xml_path)))
        kvm = probe_kvm("/dev/kvm", cpuinfo_path=str(cpuinfo))  # the real device, a hostile cpuinfo
        return render_labels([kvm, libvirt], [])[0], kvm

    baseline = set(labels_for("kvm64", "AuthenticAMD")[0])
    assert {f"feature.node.kubernetes.io/kvm-info-{name}" for name in ("usable", "cpu-vendor", "host-model")} <= baseline

    @settings(max_examples=scaled(500, 5000), deadline=None, database=None, derandomize=not LONG,  # as in test_fuzz
              suppress_health_check=list(HealthCheck))
    @given(hostile_text.filter(_carried_by_xml))
    def fuzz(raw: str) -> None:
        labels, kvm = labels_for(raw, raw)
        vendor_raw = re.split(r"\r\n|\r|\n", raw)[0].strip()  # cpuinfo is read line by line (universal newlines)
        why = _judge_labels(labels, raw, baseline)
        vendor = labels.get("feature.node.kubernetes.io/kvm-info-cpu-vendor")
        if vendor is not None and nfd_rejects("feature.node.kubernetes.io/kvm-info-cpu-vendor", vendor):
            why += f"; vendor {vendor!r} invalid"
        if kvm.ok and vendor != sanitize_value(vendor_raw) and vendor_raw not in ("GenuineIntel", "AuthenticAMD",
                                                                                  "HygonGenuine", "CentaurHauls"):
            why += f"; vendor {vendor!r} is not the sanitized form of {vendor_raw!r}"
        hostile.record(not why, 0.0, f"{raw[:40]!r}: {why}")

    fuzz()
    hostile.check(scaled(500, 5000))
