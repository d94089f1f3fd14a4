"""The labeller loops' /metrics and /healthz, and the log options of every long-running command.

Real processes: `kvminfo features-file --interval` and `kvminfo publish --interval` on the real
/dev/kvm, scraped over HTTP and read with prometheus-client's own parser (the reference for the
text format). Expected values come from what the run left behind (the feature file it wrote,
the NodeFeature the API server stand-in stored, pyproject.toml, git), never from kvminfo.
A failing source is injected at the lowest layer: a --kvm-device that does not exist.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_run import POD_ENVIRONMENT
from conftest import KVMINFO, REPO, require_real
from plugin_harness import free_port, http_get
from prometheus_client.parser import text_string_to_metric_families

from kvminfo.output.loop_metrics import LoopMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
NODE, NS = "node-a", "kvminfo"


def kvm_or_skip() -> None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        require_real("/dev/kvm is not usable here")
        pytest.skip("/dev/kvm is not usable here")


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in POD_ENVIRONMENT}


@contextmanager
def running(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`kvminfo ARGS --metrics-port P --metrics-address 127.0.0.1` in the background: (process, P);
    stopped with SIGTERM (it exits 0) at the end."""
    port = free_port()
    process = subprocess.Popen([str(KVMINFO), *args, "--metrics-port", str(port), "--metrics-address", "127.0.0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr


def scrape(port: int) -> Samples:
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def wait_for(port: int, ready: Callable[[Samples], bool], timeout_s: float = 60) -> Samples:
    """Scrape until ``ready`` (the server answers from start, before any round)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            samples = scrape(port)
            if ready(samples):
                return samples
        except OSError:  # not listening yet: the process is still importing
            pass
        assert time.monotonic() < deadline, "the loop did not get there in time"
        time.sleep(0.05)


def rounds(samples: Samples, result: str) -> float:
    return value(samples, "kvminfo_rounds_total", result=result)


def label_lines(path: Path) -> dict[str, str]:
    """The labels of an NFD feature file: key=value lines, '#' lines are comments or directives
    (NFD's features.d format, read here without kvminfo)."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def checkout_commit() -> str:
    return subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=12"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_features_file_metrics_match_what_the_round_wrote(tmp_path: Path) -> None:
    kvm_or_skip()
    output = tmp_path / "kvminfo"
    started = time.time()
    with running("features-file", "-o", str(output), "--interval", "1h", "--no-libvirt") as (_, port):
        samples = wait_for(port, lambda s: rounds(s, "ok") == 1)
        scraped = time.time()
        status, body = http_get(port, "/healthz")
    assert (status, body.startswith("ok: the last round ended")) == (200, True), body
    assert value(samples, "kvminfo_labels") == len(label_lines(output)) > 0
    assert {r: rounds(samples, r) for r in ("ok", "source_error", "input_error", "output_error")} == {
        "ok": 1, "source_error": 0, "input_error": 0, "output_error": 0}
    # one round, one probe: the histogram's count and a sum within the round's time
    assert value(samples, "kvminfo_probe_duration_seconds_count") == 1
    assert 0 < value(samples, "kvminfo_probe_duration_seconds_sum") < scraped - started
    # the round ended after its file was written, and before the scrape saw it
    assert output.stat().st_mtime - 0.01 <= value(samples, "kvminfo_last_success_timestamp_seconds") <= scraped
    assert value(samples, "kvminfo_source_errors_total", source="kvm", status="unavailable") == 0
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert value(samples, "kvminfo_build_info", version=version, commit=checkout_commit()) == 1


@pytest.mark.parametrize("source", ["kvm", "libvirt"])
def test_healthz_is_503_while_a_source_fails_and_the_counters_say_which(source: str, tmp_path: Path) -> None:
    """A device node that does not exist; a libvirt socket that does not exist."""
    missing = tmp_path / "not-here"
    fault = (["--no-libvirt", "--kvm-device", str(missing)] if source == "kvm"
             else ["--no-kvm", "--libvirt-uri", f"qemu+unix:///system?socket={missing}"])
    output = tmp_path / "kvminfo"
    with running("features-file", "-o", str(output), "--interval", "1h", *fault) as (_, port):
        samples = wait_for(port, lambda s: rounds(s, "source_error") == 1)
        status, body = http_get(port, "/healthz")
    assert status == 503
    assert body.count("\n") == 1 and "ended source_error" in body, body
    assert f"{source} unavailable" in body and str(missing) in body, body
    # the failing round counted once under the source and its status; nothing else failed
    assert value(samples, "kvminfo_source_errors_total", source=source, status="unavailable") == 1
    assert value(samples, "kvminfo_source_errors_total", source=source, status="timeout") == 0
    assert rounds(samples, "ok") == 0 and value(samples, "kvminfo_last_success_timestamp_seconds") == 0
    # the file is still written (without what the source would have said): the gauge counts its labels
    assert value(samples, "kvminfo_labels") == len(label_lines(output))


def test_healthz_turns_503_when_the_output_fails_and_back_when_it_returns(tmp_path: Path) -> None:
    kvm_or_skip()
    directory = tmp_path / "features.d"
    directory.mkdir()
    with running("features-file", "-o", str(directory / "kvminfo"), "--interval", "1", "--no-libvirt") as (_, port):
        wait_for(port, lambda s: rounds(s, "ok") >= 1)
        assert http_get(port, "/healthz")[0] == 200
        shutil.rmtree(directory)
        samples = wait_for(port, lambda s: rounds(s, "output_error") >= 1)
        status, body = http_get(port, "/healthz")
        assert status == 503 and "ended output_error" in body and str(directory) in body, body
        ok_before = rounds(samples, "ok")
        directory.mkdir()
        wait_for(port, lambda s: rounds(s, "ok") > ok_before)
        assert http_get(port, "/healthz")[0] == 200


def test_publish_metrics_count_the_labels_the_api_server_stored(standin, kubeconfig, tmp_path: Path) -> None:
    kvm_or_skip()
    with running("publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE, "--namespace", NS,
                 "--interval", "1h", "--no-libvirt") as (_, port):
        samples = wait_for(port, lambda s: rounds(s, "ok") == 1)
        assert http_get(port, "/healthz")[0] == 200
    stored = standin.get_object(NS, f"kvminfo-{NODE}")
    assert value(samples, "kvminfo_labels") == len(stored["spec"]["labels"]) > 0


def test_publish_rounds_that_cannot_write_are_output_errors(standin, kubeconfig) -> None:
    kvm_or_skip()
    standin.fail_next(503, times=1000, message="etcd is away")
    with running("publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE, "--namespace", NS,
                 "--interval", "1", "--retries", "0", "--no-libvirt") as (_, port):
        samples = wait_for(port, lambda s: rounds(s, "output_error") >= 1)
        status, body = http_get(port, "/healthz")
    assert status == 503 and "ended output_error" in body and "503" in body, body
    assert rounds(samples, "ok") == 0


def test_healthz_says_the_loop_is_stuck_after_two_rounds_without_an_end() -> None:
    """The staleness rule as documented: 2 x (interval + probe deadline) after the last OK round
    (here 2 x (10 + 5) = 30 s). A clock stands in for a loop that hangs for half a minute."""
    now = [1000.0]
    metrics = LoopMetrics(10, 5, ["kvm"], clock=lambda: now[0])
    assert metrics.health() == (False, "no round has ended yet (started 0s ago)")
    metrics.finished("ok", "")
    now[0] += 30
    assert metrics.health()[0] is True
    now[0] += 1
    healthy, why = metrics.health()
    assert not healthy and "no round has ended for 31s" in why and "= 30s" in why


def test_metrics_need_a_loop_and_a_free_port(tmp_path: Path) -> None:
    once = subprocess.run([str(KVMINFO), "features-file", "-o", str(tmp_path / "f"), "--no-libvirt",
                           "--metrics-port", "9"], capture_output=True, text=True, env=environment(), timeout=60)
    assert once.returncode == 2 and once.stderr.count("\n") == 1 and "give --interval too" in once.stderr, once.stderr
    with running("features-file", "-o", str(tmp_path / "f"), "--interval", "1h", "--no-kvm") as (_, port):
        wait_for(port, lambda s: True)
        taken = subprocess.run([str(KVMINFO), "features-file", "-o", str(tmp_path / "g"), "--interval", "1h",
                                "--no-kvm", "--metrics-address", "127.0.0.1", "--metrics-port", str(port)],
                               capture_output=True, text=True, env=environment(), timeout=60)
    assert taken.returncode != 0 and "Traceback" not in taken.stderr
    assert taken.stderr.strip().splitlines()[-1].startswith("kvminfo features-file: --metrics-port: cannot listen")


def json_lines(stderr: str) -> list[dict[str, str]]:
    """Every stderr line as one JSON object with exactly time (RFC 3339, UTC), level, logger, message."""
    lines = [json.loads(line) for line in stderr.splitlines()]
    for line in lines:
        assert set(line) == {"time", "level", "logger", "message"}, line
        assert datetime.fromisoformat(line["time"]).utcoffset() == UTC.utcoffset(None), line
        assert line["level"] in ("debug", "info", "warning", "error"), line
    return lines


def test_log_format_json_on_the_labeller(tmp_path: Path) -> None:
    output = tmp_path / "kvminfo"
    done = subprocess.run([str(KVMINFO), "features-file", "-o", str(output), "--no-libvirt", "--kvm-device",
                           str(tmp_path / "none"), "--log-format", "json"],
                          capture_output=True, text=True, env=environment(), timeout=60)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    # the missing device's warning and the write line (its output, INFO at the default level)
    assert any(line["level"] == "warning" and str(tmp_path / "none") in line["message"] for line in lines), lines
    assert any(line["level"] == "info" and line["message"].startswith(f"wrote {output}") for line in lines), lines


def test_log_level_chooses_what_is_logged(tmp_path: Path) -> None:
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KVMINFO), "features-file", "-o", str(tmp_path / "f"), "--no-kvm", *extra],
                              capture_output=True, text=True, env=environment(), timeout=60)

    assert run("--log-level", "warning").stderr == ""  # the write line is INFO: not asked for
    debug = json_lines(run("--log-level", "debug", "--log-format", "json").stderr)
    assert any(line["level"] == "debug" for line in debug), debug
    both = run("-v", "--log-level", "error")
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "not allowed with" in both.stderr, both.stderr


def test_log_format_json_on_the_device_plugin(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugins"
    process = subprocess.Popen([str(KVMINFO), "device-plugin", "--plugin-dir", str(plugin_dir), "--metrics-port", "0",
                                "--resource", f"a.io/x={tmp_path / 'none'}", "--log-format", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    deadline = time.monotonic() + 30
    while not plugin_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    lines = json_lines(stderr)
    assert any(line["logger"].startswith("kvminfo_plugin") and line["message"].startswith("starting: a.io/x")
               for line in lines), lines
    assert any(line["level"] == "warning" and "unhealthy" in line["message"] for line in lines), lines


def test_healthz_before_the_first_round_and_a_source_that_times_out(tmp_path: Path) -> None:
    """A libvirt socket that accepts and never answers: the first round waits for the
    --libvirt-timeout deadline. Meanwhile /healthz says no round has ended; then the round
    ends source_error, counted as libvirt's timeout, its probe as long as the deadline."""
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        silent.listen(8)
        with running("features-file", "-o", str(tmp_path / "kvminfo"), "--interval", "1h", "--no-kvm",
                     "--libvirt-uri", f"qemu+unix:///system?socket={path}", "--libvirt-timeout", "3") as (_, port):
            wait_for(port, lambda s: True)
            status, body = http_get(port, "/healthz")
            assert status == 503 and body.startswith("no round has ended yet"), body
            samples = wait_for(port, lambda s: rounds(s, "source_error") == 1)
            status, body = http_get(port, "/healthz")
    assert status == 503 and "libvirt timeout" in body, body
    assert value(samples, "kvminfo_source_errors_total", source="libvirt", status="timeout") == 1
    assert 3 <= value(samples, "kvminfo_probe_duration_seconds_sum") < 10
    assert value(samples, "kvminfo_probe_duration_seconds_bucket", le="2.5") == 0
    assert value(samples, "kvminfo_probe_duration_seconds_bucket", le="5.0") == 1


def test_a_fatal_error_is_a_json_line_too_once_json_was_asked_for() -> None:
    """An error after the options were read (here: a kubeconfig that does not exist) is the one
    error line as JSON (level error, logger kvminfo.publish), so every line parses."""
    done = subprocess.run([str(KVMINFO), "publish", "--kubeconfig", "/nonexistent/kubeconfig", "--node-name", NODE,
                           "--namespace", NS, "--no-libvirt", "--log-format", "json"],
                          capture_output=True, text=True, env=environment(), timeout=60)
    assert done.returncode == 2
    (line,) = json_lines(done.stderr)
    assert (line["level"], line["logger"]) == ("error", "kvminfo.publish")
    assert line["message"] == "--kubeconfig /nonexistent/kubeconfig: no such file"
