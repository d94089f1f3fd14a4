"""An idle device plugin sleeps: none of its own threads wakes while nothing
happens (issue 12: two inotify threads woke every 100 ms and the metrics server
every 0.5 s, ~20 wakeups a second on every node; SIGTERM waited for them).

Wakeups are counted, not timed: a thread's context switches
(/proc/self/task/TID/status) stay the same while it sleeps in a blocking call
with no timeout. gRPC's own completion-queue thread (grpcio polls it every
200 ms to check for signals) is the floor every grpcio server pays and is left
out; the ListAndWatch handler and the pool threads are counted.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from plugin_harness import TEST_RESOURCE, device_settings, free_port, kubelet, make_char_device, running_plugin

from kvminfo_plugin.devices.dirwatch import DirectoryWatcher, DirEvent

IDLE_S = 0.7  # longer than the old metrics poll (0.5 s) and 7 old inotify timeouts


def switches(thread: threading.Thread) -> int:
    total = 0
    with open(f"/proc/self/task/{thread.native_id}/status") as status:
        for line in status:
            if "ctxt_switches" in line:  # voluntary_ and nonvoluntary_
                total += int(line.split()[1])
    return total


def woken_while_idle(threads: list[threading.Thread]) -> dict[str, int]:
    """Context switches of each thread over IDLE_S with nothing happening."""
    before = {t: switches(t) for t in threads}
    time.sleep(IDLE_S)
    return {t.name: switches(t) - n for t, n in before.items() if switches(t) != n}


def named(prefixes: tuple[str, ...]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefixes)]


def test_directory_watcher_sleeps_until_an_event_and_stops_at_once(tmp_path: Path) -> None:
    events: list[DirEvent] = []
    seen = threading.Event()
    watcher = DirectoryWatcher([str(tmp_path)], lambda e: (events.append(e), seen.set()), "idle-test-inotify").start()
    try:
        (thread,) = named(("idle-test-inotify",))
        time.sleep(0.1)  # let it reach its wait
        assert woken_while_idle([thread]) == {}
        (tmp_path / "node").touch()
        assert seen.wait(5) and events[0].name == "node"
    finally:
        watcher.stop()
    assert not thread.is_alive()


def test_registered_plugin_with_metrics_has_no_idle_wakeups(plugin_dir: Path, device: Path) -> None:
    port = free_port()
    settings = {**device_settings(plugin_dir, device), "metricsPort": port, "metricsAddress": "127.0.0.1"}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        time.sleep(0.2)  # the scrape's handler thread ends, the stream's first list is sent
        ours = named(("plugin-under-test", "health", "plugin-dir-inotify", "metrics-http", "grpc_"))
        assert {"plugin-under-test", "health", "health-inotify", "plugin-dir-inotify", "metrics-http"} <= {t.name for t in ours}
        assert k.endpoints[TEST_RESOURCE].stream_ended is False  # one ListAndWatch stream is open
        assert woken_while_idle(ours) == {}
        metrics_thread = named(("metrics-http",))[0]
    assert not metrics_thread.is_alive()


def test_the_slow_poll_wakes_one_thread_for_sockets_and_nodes(plugin_dir: Path, device: Path) -> None:
    """The sockets' and the nodes' slow re-checks share one wake-up per interval, the
    supervisor's (the thread running the plugin); the health thread sleeps until inotify
    reports something (it woke on its own timer too: two wake-ups per interval)."""
    settings = {**device_settings(plugin_dir, device), "pollIntervalSeconds": 0.1}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        time.sleep(0.2)
        woken = woken_while_idle(named(("plugin-under-test", "health")))
        assert "plugin-under-test" in woken, woken  # the poll runs: 7 intervals in IDLE_S
        assert "health" not in woken and "health-inotify" not in woken, woken


def test_the_slow_poll_still_sees_what_inotify_cannot(plugin_dir: Path, tmp_path: Path) -> None:
    """A filesystem mounted over the node's directory (a remounted /dev) sends no inotify
    event on the watched directory; the slow poll finds the node gone."""
    directory = tmp_path / "dev"
    directory.mkdir()
    node = make_char_device(directory / "node")
    settings = {**device_settings(plugin_dir, node), "pollIntervalSeconds": 0.2}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        assert set(k.latest(TEST_RESOURCE).values()) == {"Healthy"}
        subprocess.run(["mount", "-t", "tmpfs", "kvminfo-test", str(directory)], check=True)
        try:
            k.wait_health(TEST_RESOURCE, lambda d: set(d.values()) == {"Unhealthy"}, timeout_s=3.0)
        finally:
            subprocess.run(["umount", str(directory)], check=True)
        k.wait_health(TEST_RESOURCE, lambda d: set(d.values()) == {"Healthy"}, timeout_s=3.0)
