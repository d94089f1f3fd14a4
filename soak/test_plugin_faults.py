"""Device plugin under faults: kubelet restarts, device flaps, absent kubelet, cut streams, load, SIGTERM.

The plugin is the real `kvminfo device-plugin` process serving the real
/dev/kvm and a mknod'd char device; the kubelet is tests/kubelet_emulator.py,
which does what a kubelet restart does to the plugin directory (every socket
deleted, a new kubelet.sock).
"""

from __future__ import annotations

import random
import stat
import threading
import time
from pathlib import Path

import grpc
import pytest
from plugin_harness import kubelet, make_char_device, running_plugin

from kvminfo_plugin.kubelet import registration
from soak.harness import Stopwatch, scaled, scaled_s
from soak.plugin_rig import FLAP_RESOURCE, KVM_RESOURCE, Caller, Layout, PluginProcess, wait_until

FAMILY = "Device plugin"
RESOURCES = (KVM_RESOURCE, FLAP_RESOURCE)
REGISTER_WITHIN_S = 5.0  # generous bound for a restart; the figure in the table is what matters
TRANSITION_WITHIN_S = 1.0


@pytest.fixture
def layout(short_tmp: Path) -> Layout:
    return Layout(short_tmp).create()


def _registered(k, count: int = 1, timeout_s: float = 10.0) -> float:
    """Wait for registration #count of every resource; the time of the last one."""
    return max(k.wait_registered(r, count=count, timeout_s=timeout_s).registered_at for r in RESOURCES)


def _registration_count(k, resource: str) -> int:
    return sum(1 for _, r in k.registrations if r.resource_name == resource)


def _all_healthy(k) -> dict[str, dict[str, str]]:
    return {r: k.latest(r) for r in RESOURCES}


def _settle(k, plugin: PluginProcess) -> tuple[int, int]:
    """One admission per resource, then a pause: the same state before and after for fd/thread counts."""
    for resource in RESOURCES:
        k.admit(resource, 1)
    time.sleep(0.5)
    return plugin.fds(), plugin.threads()


class _Admissions:
    """The kubelet admitting pods back to back (Allocate on its own channel) until finished."""

    def __init__(self, k) -> None:
        self._k, self._stop = k, threading.Event()
        self.spans: list[tuple[float, float]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        wait_until(lambda: len(self.spans) >= 1, 2.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._k.admit(KVM_RESOURCE, 1)
            except Exception:  # noqa: BLE001 - the kubelet restarted under its own call; that call is lost
                time.sleep(0.002)
            self.spans.append((started, time.monotonic()))

    def finish_overlapping(self, start: float, end: float) -> int:
        """Stop; how many Allocates were in flight while the restart ran."""
        self._stop.set()
        self._thread.join(10)
        return sum(1 for a, b in self.spans if a < end and b > start)


def test_kubelet_restarts(layout: Layout, scenario) -> None:
    restarts = scenario(FAMILY, "Kubelet restarts (some during an Allocate)", "restart -> every resource registered")
    leaks = scenario(FAMILY, "Kubelet restarts: plugin fds and threads", "n/a")
    rng = random.Random(50)
    in_flight_at_restart = 0
    with kubelet(layout.plugin_dir) as k, PluginProcess(layout) as plugin:
        _registered(k)
        expected = _all_healthy(k)
        assert all(set(d.values()) == {"Healthy"} for d in expected.values()), expected
        k.restart()  # warm-up: the first restart creates gRPC pools that then persist
        _registered(k, count=2)
        fds_before, threads_before = _settle(k, plugin)
        count = scaled(10, 50)
        for i in range(count):
            time.sleep(rng.uniform(0.0, 0.5))
            admissions = _Admissions(k) if i % 2 == 0 else None  # every other restart: during Allocates
            started = time.monotonic()
            k.restart()
            restart_span = (started, time.monotonic())
            try:
                registered_at = _registered(k, count=i + 3, timeout_s=REGISTER_WITHIN_S)
            except AssertionError as err:
                restarts.record(False, time.monotonic() - started, str(err))
                continue
            finally:
                if admissions is not None:
                    in_flight_at_restart += admissions.finish_overlapping(*restart_span) > 0
            now = _all_healthy(k)
            sockets = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in layout.plugin_sockets()}
            restarts.record(now == expected and len(sockets) == len(RESOURCES) and set(sockets.values()) == {0o600},
                            registered_at - started,
                            f"restart {i}: device list {now} (expected {expected}), sockets {sockets}")
        fds_after, threads_after = _settle(k, plugin)
        # Threads of finished calls wind down asynchronously: give them a moment before calling it a leak.
        wait_until(lambda: plugin.fds() <= fds_before and plugin.threads() <= threads_before, 5.0, 0.1)
        fds_after, threads_after = plugin.fds(), plugin.threads()
    restarts.notes = f"{in_flight_at_restart} restarts hit an Allocate in flight"
    leaks.notes = f"fds {fds_before} -> {fds_after}, threads {threads_before} -> {threads_after} over {count} restarts"
    leaks.record(fds_after <= fds_before and threads_after <= threads_before, 0.0, leaks.notes)
    restarts.check(count)
    leaks.check()


def test_device_flaps(layout: Layout, scenario) -> None:
    flaps = scenario(FAMILY, "Device flaps (mknod char device)", "change -> ListAndWatch update")
    count = scaled(10, 50)
    with kubelet(layout.plugin_dir) as k, PluginProcess(layout) as plugin:
        endpoint = k.wait_registered(FLAP_RESOURCE, timeout_s=10)
        for i in range(count):
            for healthy in (False, True):
                want = "Healthy" if healthy else "Unhealthy"
                seen = len(endpoint.updates)
                changed = time.monotonic()
                make_char_device(layout.flap_device) if healthy else layout.flap_device.unlink()
                try:
                    k.wait_health(FLAP_RESOURCE, lambda d, want=want: set(d.values()) == {want},
                                  timeout_s=TRANSITION_WITHIN_S)
                    latency = endpoint.updates[seen][0] - changed
                except (AssertionError, IndexError) as err:
                    flaps.record(False, time.monotonic() - changed, f"flap {i} -> {want}: {err}")
                    continue
                flaps.record(latency <= TRANSITION_WITHIN_S, latency, f"flap {i} -> {want} after {latency:.3f}s")
        # In order, none missed or repeated: Healthy, then Unhealthy/Healthy alternating, once each.
        states = [set(update.values()) for _, update in endpoint.updates]
        assert plugin.alive()
    expected = [{"Healthy"}] + [{"Unhealthy"}, {"Healthy"}] * count
    flaps.notes = f"{len(states)} ListAndWatch messages, in order: {states == expected}"
    assert states == expected, states
    flaps.check(2 * count)


def test_kubelet_absent_at_start(layout: Layout, scenario) -> None:
    absent_s = scaled_s(5.0, 30.0)
    absent = scenario(FAMILY, f"Kubelet absent for {absent_s:g} s, then appearing", "kubelet.sock -> registered")
    with PluginProcess(layout) as plugin:
        time.sleep(absent_s)
        alive = plugin.alive()
        lines_while_absent = len(plugin.log_lines())
        with kubelet(layout.plugin_dir) as k:
            appeared = time.monotonic()
            try:
                latency = _registered(k, timeout_s=5.0) - appeared
            except AssertionError as err:
                latency = float("inf")
                absent.failures.append(str(err))
        log = plugin.log_lines()
    # Bounded log volume: the plugin retries with backoff from 0.1 s doubling to a 5 s cap, one line per
    # attempt per resource: at most ~7 attempts to reach the cap, then one per 5 s; plus start-up lines.
    bound = 6 + len(RESOURCES) * (7 + int(absent_s / 5.0) + 1)
    tracebacks = [line for line in log if "Traceback" in line]
    absent.notes = f"{lines_while_absent} log lines in {absent_s:g} s (bound {bound})"
    absent.record(alive and latency <= 1.0 and lines_while_absent <= bound and not tracebacks, latency,
                  f"alive {alive}, registered after {latency:.2f}s, {lines_while_absent} lines, tracebacks {tracebacks}")
    absent.check()


def test_stream_cut_without_restart(layout: Layout, scenario) -> None:
    cuts = scenario(FAMILY, "Stream cut by the kubelet (no restart)", "cut -> registered again")
    count = scaled(5, 20)
    with kubelet(layout.plugin_dir) as k, PluginProcess(layout) as plugin:
        _registered(k)
        expected = _all_healthy(k)
        for i in range(count):
            before = _registration_count(k, KVM_RESOURCE)
            cut = time.monotonic()
            k.end_stream(KVM_RESOURCE)
            try:
                endpoint = k.wait_registered(KVM_RESOURCE, count=before + 1, timeout_s=REGISTER_WITHIN_S)
            except AssertionError as err:
                cuts.record(False, time.monotonic() - cut, f"cut {i}: {err}; plugin log: {plugin.log_lines()[-4:]}")
                break  # no stream left to cut
            intact = k.latest(KVM_RESOURCE) == expected[KVM_RESOURCE]
            cuts.record(intact, endpoint.registered_at - cut, f"cut {i}: device list {k.latest(KVM_RESOURCE)}")
    cuts.check(count)


class AllocateLoad:
    """Concurrent callers, each with its own channels, allocating slots of the devices the kubelet lists.

    Outcomes are tallied: "ok", "refused: unhealthy" (the device flapped between listing and call),
    "cut by a kubelet restart: CODE" (a failure while ``restarting`` is set: the kubelet that made the
    call is gone), and "ERROR CODE: details" for anything else.
    """

    def __init__(self, k, layout: Layout, callers: int = 16, timeout_s: float = 5.0,
                 restarting: threading.Event | None = None) -> None:
        self._k, self._restarting = k, restarting or threading.Event()
        self._stop, self._lock = threading.Event(), threading.Lock()
        self.tally: dict[str, int] = {}
        self.worst_s = 0.0
        self._callers = [{r: Caller(layout.socket_of(r), timeout_s) for r in RESOURCES} for _ in range(callers)]
        self._threads = [threading.Thread(target=self._run, args=(c, random.Random(i)), daemon=True)
                         for i, c in enumerate(self._callers)]
        for thread in self._threads:
            thread.start()

    def _run(self, caller: dict[str, Caller], rng: random.Random) -> None:
        while not self._stop.is_set():
            resource = rng.choice(RESOURCES)
            try:
                listing = self._k.latest(resource)
            except (KeyError, IndexError):  # the kubelet is restarting: no endpoint this instant
                time.sleep(0.005)
                continue
            device_id = rng.choice(sorted(listing))
            during_restart = self._restarting.is_set()
            with Stopwatch() as sw:
                try:
                    caller[resource].allocate(device_id)
                    outcome = "ok"
                except grpc.RpcError as err:
                    unhealthy = err.code() == grpc.StatusCode.FAILED_PRECONDITION and "unhealthy" in (err.details() or "")
                    outcome = "refused: unhealthy" if unhealthy else f"ERROR {err.code().name}: {err.details()}"
                    if not unhealthy and (during_restart or self._restarting.is_set()):
                        outcome = f"cut by a kubelet restart: {err.code().name}"
            with self._lock:
                self.tally[outcome] = self.tally.get(outcome, 0) + 1
                self.worst_s = max(self.worst_s, sw.elapsed)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for caller in self._callers:
            for channel in caller.values():
                channel.close()


def test_load_while_kubelet_restarts_and_device_flaps(layout: Layout, scenario) -> None:
    duration_s = scaled_s(10.0, 60.0)
    load = scenario(FAMILY, f"Load: 16 Allocate callers for {duration_s:g} s, restarts + flaps",
                    "one Allocate")
    memory = scenario(FAMILY, "Load: plugin RSS growth <= 5 MB", "n/a")
    restarting = threading.Event()
    restarts = flaps = 0
    with kubelet(layout.plugin_dir) as k, PluginProcess(layout) as plugin:
        _registered(k)
        traffic = AllocateLoad(k, layout, restarting=restarting)
        time.sleep(2.0)  # warm-up: pools, channels and caches reach their working size before the baseline
        rss_before = plugin.rss_bytes()
        rng = random.Random(60)
        ends = time.monotonic() + duration_s
        next_restart = time.monotonic() + rng.uniform(1.0, 3.0)
        while time.monotonic() < ends:
            if time.monotonic() >= next_restart:
                restarting.set()
                count = _registration_count(k, KVM_RESOURCE)
                k.restart()
                restarts += 1
                try:
                    _registered(k, count=count + 1, timeout_s=REGISTER_WITHIN_S)
                finally:
                    restarting.clear()
                next_restart = time.monotonic() + rng.uniform(1.0, 3.0)
            else:
                if layout.flap_device.exists():
                    layout.flap_device.unlink()
                else:
                    make_char_device(layout.flap_device)
                flaps += 1
                time.sleep(rng.uniform(0.1, 0.4))
        traffic.stop()
        rss_after = plugin.rss_bytes()
        alive = plugin.alive()
    tally = traffic.tally
    calls = sum(tally.values())
    unexpected = {outcome: n for outcome, n in tally.items() if outcome.startswith("ERROR")}
    for outcome, n in tally.items():
        for _ in range(n):
            load.record(not outcome.startswith("ERROR"), 0.0, outcome)
    load.worst_latency_s = traffic.worst_s
    growth = rss_after - rss_before
    load.notes = (f"{calls} calls: " + ", ".join(f"{n} {o}" for o, n in sorted(tally.items()))
                  + f"; {restarts} kubelet restarts, {flaps} device flaps")
    memory.notes = f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB ({growth / 2**20:+.2f} MiB)"
    memory.record(growth <= 5 * 2**20, 0.0, memory.notes)
    assert alive and not unexpected and restarts >= 2 and flaps >= 10, (alive, unexpected, restarts, flaps)
    load.check(1000)
    memory.check()


def test_sigterm_during_allocate_burst(layout: Layout, scenario) -> None:
    stops = scenario(FAMILY, "SIGTERM during an Allocate burst", "SIGTERM -> exit")
    rng = random.Random(15)
    for i in range(scaled(3, 10)):
        with kubelet(layout.plugin_dir) as k, PluginProcess(layout) as plugin:
            _registered(k)
            burst = AllocateLoad(k, layout, timeout_s=1.0)
            time.sleep(rng.uniform(0.3, 1.0))
            code, took = plugin.terminate(timeout_s=5.0)
            burst.stop()
            tally = burst.tally
            left = [p.name for p in layout.plugin_sockets()]
            specs = sorted(p.name for p in layout.cdi_dir.iterdir())  # kept: pods' containers may restart meanwhile
            traceback = any("Traceback" in line for line in plugin.log_lines())
        stops.record(code == 0 and took <= 5.0 and not left and len(specs) == 2 and not traceback and tally.get("ok", 0) > 0,
                     took, f"run {i}: exit {code} after {took:.2f}s, sockets left {left}, CDI specs kept {specs}, "
                     f"traceback {traceback}, calls {tally}")
    stops.check()


def test_stream_cut_inside_the_register_window(short_tmp: Path, scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the long stream-cut run found: a stream that ends before the plugin has processed the
    Register answer. The answer is delayed 0.3 s (the supervisor thread descheduled) to open the window
    every time; the plugin runs in-process for that, against the same kubelet emulator."""
    window = scenario(FAMILY, "Stream cut while the Register answer is in flight (0.3 s delay)", "cut -> registered again")
    real_register = registration.register_with_kubelet

    def register_then_stall(*args: object, **kwargs: object) -> registration.Refusal | None:
        error = real_register(*args, **kwargs)
        time.sleep(0.3)
        return error

    monkeypatch.setattr(registration, "register_with_kubelet", register_then_stall)
    device = make_char_device(short_tmp / "dev0")
    resource = "soak.kvminfo.io/window"
    settings = {"pluginDir": str(short_tmp), "resources": [{"name": resource, "devices": [str(device)], "slots": 2}]}
    count = scaled(3, 10)
    with kubelet(short_tmp) as k, running_plugin(settings):
        k.wait_registered(resource, timeout_s=5)
        for i in range(count):
            before = _registration_count(k, resource)
            cut = time.monotonic()
            k.end_stream(resource)  # the first cut is ordinary; each later one lands inside the stall
            try:
                endpoint = k.wait_registered(resource, count=before + 1, timeout_s=REGISTER_WITHIN_S)
            except AssertionError as err:
                window.record(False, time.monotonic() - cut, f"cut {i}: {err}")
                break
            window.record(True, endpoint.registered_at - cut)
    window.check(count)


def test_daemonset_update_with_overlap(layout: Layout, scenario) -> None:
    """The next instance starts before the old one ends (maxSurge): the old one must leave the new
    socket and the CDI specs alone. When the old one's streams end, the kubelet drops the new
    registration by resource name (pkg/kubelet/cm/devicemanager/plugin/v1beta1/handler.go
    runClient, as the emulator does): the new instance must register again (once, twice at
    most if the kubelet's clean-up lands after it) and end up with its streams open."""
    overlaps = scenario(FAMILY, "DaemonSet update with overlap (new instance, then SIGTERM to the old)",
                        "old SIGTERM -> exit")
    count = scaled(3, 10)
    with kubelet(layout.plugin_dir) as k:
        old = PluginProcess(layout, log_name="plugin-0.log")
        try:
            _registered(k)
            for i in range(count):
                new = PluginProcess(layout, log_name=f"plugin-{i + 1}.log")
                before = _registration_count(k, KVM_RESOURCE)
                _registered(k, count=before + 1)
                time.sleep(0.3)  # the old instance notices its sockets replaced and stands aside
                registrations = {r: _registration_count(k, r) for r in RESOURCES}
                code, took = old.terminate()
                old_log = old.log_lines()[-6:]
                old.close()
                time.sleep(0.3)
                sockets = [p.name for p in layout.plugin_sockets()]
                specs = sorted(p.name for p in layout.cdi_dir.iterdir())
                streams = {r: not k.endpoints[r].stream_ended for r in RESOURCES}
                again = {r: _registration_count(k, r) - registrations[r] for r in RESOURCES}
                admitted = k.admit(KVM_RESOURCE, 1).devices[0].host_path == "/dev/kvm"
                overlaps.record(code == 0 and len(sockets) == 2 and len(specs) == 2 and all(streams.values())
                                and all(1 <= n <= 2 for n in again.values()) and admitted, took,
                                f"round {i}: exit {code}, sockets {sockets}, specs {specs}, streams open {streams}, "
                                f"registrations after the old one ended {again}, admitted {admitted}; old log {old_log}")
                old = new
        finally:
            old.close()
    overlaps.check(count)


def test_cdi_spec_wiped_while_running(layout: Layout, scenario) -> None:
    """A cleaned tmpfs /var/run/cdi (the directory and the specs) while pods are admitted."""
    restores = scenario(FAMILY, "CDI specs wiped (directory removed) while serving", "wiped -> every spec back")
    count = scaled(5, 20)
    with kubelet(layout.plugin_dir) as k, PluginProcess(layout):
        _registered(k)
        wanted = {p.name: p.read_bytes() for p in layout.cdi_dir.iterdir()}
        for i in range(count):
            gone = layout.root / f"gone{i}"
            wiped = time.monotonic()
            layout.cdi_dir.rename(gone)
            back = wait_until(lambda: layout.cdi_dir.is_dir() and all(
                (layout.cdi_dir / name).is_file() and (layout.cdi_dir / name).read_bytes() == content
                for name, content in wanted.items()), 6.0, 0.002)
            restores.record(back, time.monotonic() - wiped, f"wipe {i}: restored {back}")
            for entry in gone.iterdir():
                entry.unlink()
            gone.rmdir()
    restores.check(count)


def test_sigterm_right_after_registration(layout: Layout, scenario) -> None:
    """SIGTERM at once after registration, round after round: the moment a signal handler used to
    land inside the main thread's Event and deadlock it (found by the plugin bench)."""
    stops = scenario(FAMILY, "SIGTERM right after registration (a fresh process each round)", "SIGTERM -> exit")
    count = scaled(10, 60)
    with kubelet(layout.plugin_dir) as k:
        for i in range(count):
            with PluginProcess(layout, log_name=f"plugin-{i}.log") as plugin:
                _registered(k, count=i + 1)
                code, took = plugin.terminate(timeout_s=5.0)
                stops.record(code == 0 and took <= 5.0, took, f"round {i}: exit {code} after {took:.2f}s; "
                             f"log {plugin.log_lines()[-3:]}")
    stops.check(count)
