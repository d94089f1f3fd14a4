"""The plugin's /metrics and /healthz: the metric names, labels and types a
scraper sees over HTTP, read back with prometheus-client's own parser (the
reference for the text format); the registered gauge from start and build_info;
GET and HEAD only; a bad request or a silent client breaks nothing; the port is
closed on stop."""

from __future__ import annotations

import http.client
import socket
import subprocess
import tomllib

from plugin_harness import REPO, free_port
from prometheus_client.parser import text_string_to_metric_families

from kvminfo.common.metrics_http import CONTENT_TYPE, MetricsServer
from kvminfo_plugin.telemetry.metrics import PluginMetrics

HOSTILE = 'a\\b"c\nd'  # every character the format escapes in a label value


def filled() -> PluginMetrics:
    metrics = PluginMetrics(["a.io/x", "a.io/never"])
    metrics.registrations.labels("a.io/x", "ok").inc()
    metrics.registrations.labels("a.io/x", "failed").inc(2)
    metrics.allocations.labels("a.io/x").inc(3)
    metrics.errors.labels(HOSTILE, "unknown_device").inc()
    metrics.set_devices("a.io/x", 7, 1)
    metrics.registered.labels("a.io/x").set(1)
    return metrics


def scrape(metrics: PluginMetrics) -> str:
    """/metrics of a MetricsServer over these metrics, as a scraper reads it."""
    port = free_port()
    server = MetricsServer(metrics.registry, lambda: (True, "ok"), "127.0.0.1", port).start()
    try:
        status, _, body = request(port, "GET", "/metrics")
    finally:
        server.stop()
    assert status == 200
    return body.decode()


def test_the_reference_parser_reads_every_sample() -> None:
    families = {f.name: f for f in text_string_to_metric_families(scrape(filled()))}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
               if s.name.startswith("kvminfo_plugin_") and s.name != "kvminfo_plugin_build_info"}
    assert families["kvminfo_plugin_registrations"].type == "counter"
    assert families["kvminfo_plugin_devices"].type == "gauge"
    assert families["kvminfo_plugin_devices"].documentation == "Advertised slots by health"
    assert samples == {
        ("kvminfo_plugin_registrations_total", (("resource", "a.io/x"), ("result", "failed"))): 2.0,
        ("kvminfo_plugin_registrations_total", (("resource", "a.io/x"), ("result", "ok"))): 1.0,
        ("kvminfo_plugin_allocations_total", (("resource", "a.io/x"),)): 3.0,
        ("kvminfo_plugin_errors_total", (("kind", "unknown_device"), ("resource", HOSTILE))): 1.0,
        ("kvminfo_plugin_devices", (("health", "Healthy"), ("resource", "a.io/x"))): 7.0,
        ("kvminfo_plugin_devices", (("health", "Unhealthy"), ("resource", "a.io/x"))): 1.0,
        ("kvminfo_plugin_registered", (("resource", "a.io/x"),)): 1.0,
        # a resource never registered has its 0 from the start (issue 19: an `== 0` alert must fire)
        ("kvminfo_plugin_registered", (("resource", "a.io/never"),)): 0.0,
    }


def test_build_info_names_the_installed_version_and_commit() -> None:
    """build_info (Prometheus' convention: an info metric of value 1) carries the version
    kvminfo was installed with (pyproject.toml's [project] version, read here independently)
    and the commit: this checkout's own `git describe` (the editable install runs from it)."""
    samples = [s for f in text_string_to_metric_families(scrape(PluginMetrics())) for s in f.samples
               if s.name == "kvminfo_plugin_build_info"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (sample,) = samples
    assert (sample.name, sample.labels, sample.value) == ("kvminfo_plugin_build_info",
                                                          {"version": version, "commit": checkout_commit()}, 1.0)


def checkout_commit() -> str:
    """What the running code was built from, asked of git directly (not of kvminfo)."""
    return subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=12"],
                          capture_output=True, text=True, check=True).stdout.strip()


def request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_http_answers_scrapes_probes_and_nothing_else() -> None:
    healthy = [True]
    port = free_port()
    server = MetricsServer(filled().registry, lambda: (healthy[0], "ok: fine" if healthy[0] else "a.io/x: no kubelet"),
                           "127.0.0.1", port).start()
    try:
        status, headers, body = request(port, "GET", "/metrics")
        assert status == 200 and headers["Content-Type"] == CONTENT_TYPE
        assert int(headers["Content-Length"]) == len(body)
        assert "kvminfo_plugin_allocations_total" in {s.name for f in text_string_to_metric_families(body.decode())
                                                      for s in f.samples}
        assert request(port, "GET", "/healthz")[::2] == (200, b"ok: fine\n")
        healthy[0] = False
        assert request(port, "GET", "/healthz?verbose")[::2] == (503, b"a.io/x: no kubelet\n")
        status, headers, body = request(port, "HEAD", "/metrics")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        status, headers, _ = request(port, "POST", "/metrics")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"garbage\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.0 400 ")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # connects and leaves without a word: nothing breaks
        assert request(port, "GET", "/")[0] == 200
    finally:
        server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # closed on stop
