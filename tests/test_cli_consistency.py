"""CLI consistency (issue 11, item 6): one duration syntax, bounded options with clear
messages, short API error lines, examples in every --help. Each case failed before."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cli_run import one_line, run

NODE, NS = "node-1.example", "kvminfo"


def publish(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run("publish", "--node-name", NODE, "--namespace", NS, "--no-libvirt", *args, env=env)


# -- one duration syntax ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["5s", "2.5s", "1m", "7"])
def test_libvirt_timeout_takes_units_like_every_time_option(value: str, libvirt_uri: str) -> None:
    done = run("labels", "--libvirt-uri", libvirt_uri, "--libvirt-timeout", value)
    assert done.returncode == 0, done.stderr
    assert "kvm-info-host-model=" in done.stdout  # libvirt answered within the deadline


def test_a_bare_number_is_seconds_for_interval_and_expiry_too() -> None:
    # --no-libvirt: the probe deadline is the local sources' 5 s, so a round is 60 + 5 s
    done = run("features-file", "-o", "/tmp/never-written", "--no-libvirt", "--interval", "60", "--expiry", "100")
    one_line(done, 2, "kvminfo features-file: ", "--expiry 1m40s is too short for --interval 1m: at least 2m10s")
    # publish reads --interval the same way: accepted, then the next problem is reported
    done = publish("--interval", "60", "--kubeconfig", "/nonexistent/kubeconfig")
    one_line(done, 2, "kvminfo publish: ", "--kubeconfig /nonexistent/kubeconfig: no such file")


def test_an_interval_no_expiry_can_outlast_says_what_would_do() -> None:
    done = run("features-file", "-o", "/tmp/never-written", "--no-libvirt", "--interval", "200d")
    # 365d is the longest expiry; two rounds of (interval + 5 s) must fit in it
    one_line(done, 2, "kvminfo features-file: --interval 200d is too long for a feature file",
             "--expiry must be at least", "365d", "use --interval 182d11h59m55s or less")


@pytest.mark.parametrize("interval", ["0.5", "0.5s"])
def test_a_sub_second_interval_is_refused(interval: str) -> None:
    done = publish("--interval", interval)
    one_line(done, 2, "kvminfo publish: ", f"--interval: '{interval}' is too short; at least 1s")


# -- bounded numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize("retries", ["1000000", "101", "-1"])
def test_retries_are_bounded_with_a_reason(retries: str) -> None:
    done = publish("--retries", retries, "--kubeconfig", "/nonexistent/kubeconfig")
    one_line(done, 2, "kvminfo publish: ", f"--retries {retries}: must be between 0 and 100",
             "the backoff is capped at 1m")


def test_the_retry_bound_itself_is_accepted() -> None:
    done = publish("--retries", "100", "--kubeconfig", "/nonexistent/kubeconfig")
    one_line(done, 2, "kvminfo publish: --kubeconfig /nonexistent/kubeconfig: no such file")


# -- API errors in one short line ----------------------------------------------------------------

def test_kubeconfig_that_does_not_exist_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "kubeconfig"
    done = publish("--kubeconfig", str(missing))
    line = one_line(done, 2, f"kvminfo publish: --kubeconfig {missing}: no such file")
    assert "Invalid kube-config" not in line
    done = publish(env={"KUBECONFIG": str(missing)})
    one_line(done, 2, f"kvminfo publish: $KUBECONFIG {missing}: no such file")


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server that is not Kubernetes: Python's file server, HTML error pages."""
    (tmp_path / "www").mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_kubeconfig_pointing_at_a_web_server_is_one_short_line(tmp_path: Path, web_server: str) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "web",
        "clusters": [{"name": "web", "cluster": {"server": web_server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "web", "context": {"cluster": "web", "user": "u"}}],
    }))
    done = publish("--kubeconfig", str(kubeconfig), "--retries", "0")
    line = one_line(done, 1, "kvminfo publish: ", f"{web_server} answered 404", "with text/html",
                    "not a Kubernetes Status")
    assert "<" not in line and "DOCTYPE" not in line and len(line) < 400  # the status and reason, never the body


# -- --help and --version -----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["probe", "labels", "features-file", "publish", "device-plugin"])
def test_every_command_help_has_examples(command: str) -> None:
    done = run(command, "--help")
    assert done.returncode == 0, done.stderr
    after = done.stdout.split("\nexamples:\n", 1)
    assert len(after) == 2, done.stdout[-400:]
    examples = [line for line in after[1].splitlines() if line.startswith(f"  kvminfo {command}")]
    assert 1 <= len(examples) <= 2, after[1]


def test_version_is_listed_in_the_top_level_help() -> None:
    done = run("--help")
    assert done.returncode == 0
    assert "--version" in done.stdout and "-h, --help" in done.stdout
    assert run("--version").stdout.startswith("kvminfo ")


def test_device_plugin_config_help_names_every_field_and_a_page_that_exists() -> None:
    """`--config`'s help is what an operator reads first: every key the loader accepts
    (kvminfo_plugin.config's field sets) and the page that explains them."""
    from kvminfo_plugin.config import _RESOURCE_FIELDS, _TOP_FIELDS
    from kvminfo_plugin.main import build_parser

    text = next(a.help for a in build_parser("kvminfo device-plugin")._actions if "--config" in a.option_strings)
    assert text is not None
    assert (_TOP_FIELDS | _RESOURCE_FIELDS) - set(re.findall(r"[A-Za-z]+", text)) == set(), text
    pages = re.findall(r"[\w/.-]+\.md", text)
    assert pages and all((Path(__file__).parent.parent / page).is_file() for page in pages), pages
