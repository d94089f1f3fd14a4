"""Shared parts of the device plugin footprint benchmarks (bench_footprint.py,
bench_allocation.py): the real device plugin process (`kvminfo-device-plugin`, as deployed) and the floor
(bench/floor_plugin.py, a minimal plain-grpcio plugin) started side by side
against one kubelet emulator, and the per-process figures read from /proc.

CPU is the sum of every thread's run time from /proc/PID/task/*/schedstat
(nanoseconds, unlike the 10 ms ticks of /proc/PID/stat); wakeups are the
threads' context switches (voluntary + involuntary) from their status files.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kubelet_emulator import KubeletEmulator  # noqa: E402

# What the DaemonSet runs (deploy/device-plugin): `kvminfo device-plugin` without the CLI's entry point lookup.
PLUGIN = REPO / ".venv" / "bin" / "kvminfo-device-plugin"
FLOOR = REPO / "bench" / "floor_plugin.py"
NULL_RDEV = os.stat("/dev/null").st_rdev


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_ns(pid: int) -> int:
    """Run time of every live thread of ``pid`` so far, in ns."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended meanwhile
    return total


def wakeups(pid: int) -> int:
    """Context switches of every live thread of ``pid`` so far."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:  # voluntary_ and nonvoluntary_
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def per_thread(pid: int) -> dict[int, tuple[str, int, int]]:
    """Thread ID -> (name as the kernel has it, run time in ns, context switches) of
    every live thread of ``pid``. grpcio's C++ threads carry their own names
    (event_engine, grpc_global_timer, lifeguard); Python's threads keep the process's."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                ran = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{task}/status") as f:
                switches = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(task)] = (name, ran, switches)
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def median(values: list[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


@dataclass
class Process:
    """A running plugin (kvminfo or floor) and the resources it registered."""

    kind: str  # "kvminfo" | "floor"
    popen: subprocess.Popen[bytes]
    resources: list[str]
    sockets: dict[str, Path] = field(default_factory=dict)  # resource -> its socket, once registered
    registered_after_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def terminate(self) -> float:
        """SIGTERM -> exit, in seconds."""
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        code = self.popen.wait(30)
        took = time.monotonic() - started
        if code != 0:
            raise SystemExit(f"{self.kind} exited {code} on SIGTERM")
        return took


class Rig:
    """One kubelet emulator in a temporary plugin dir; plugins and floors started against it.

    Resource names carry a counter, so every process registers names of its own."""

    def __init__(self) -> None:
        # Bytecode for every module as the image has it (its Dockerfile runs compileall):
        # with PYTHONDONTWRITEBYTECODE set, a module edited since `make install` would
        # otherwise be compiled from source at every start (+5 ms for config.py alone).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "kvminfo"), str(REPO / "plugin" / "kvminfo_plugin")],
                       check=True)
        # Short paths: slot IDs start with the node's path, and 100,000 of them must fit
        # in the kubelet's 4 MiB ListAndWatch limit (~35 bytes a slot here).
        self.workdir = Path(tempfile.mkdtemp(prefix="kb-", dir="/tmp"))
        self.plugin_dir = self.workdir / "dp"
        self.plugin_dir.mkdir()
        self.node = self.workdir / "d"
        os.mknod(self.node, 0o600 | 0o020000, NULL_RDEV)  # a char device like /dev/null
        self.kubelet = KubeletEmulator(self.plugin_dir).start()
        self.log = open(self.workdir / "plugin.log", "wb")  # the plugin logs one line per Allocate
        self._count = 0

    def close(self) -> None:
        self.kubelet.stop()
        self.log.close()
        subprocess.run(["rm", "-rf", str(self.workdir)], check=False)

    def _names(self, kind: str, resources: int) -> list[str]:
        self._count += 1
        return [f"bench.kvminfo.io/{kind}{self._count}-{i}" for i in range(resources)]

    def start(self, kind: str, slots: int, resources: int = 1, metrics_port: int = 0,
              extra_config: str = "") -> Process:
        """Start ``kind`` ("kvminfo" or "floor") and wait until the kubelet holds a
        device list for every resource."""
        names = self._names(kind, resources)
        before = {n: 0 for n in names}
        if kind == "kvminfo":
            config = self.workdir / f"plugin-{self._count}.yaml"
            lines = [f"pluginDir: {self.plugin_dir}", f"metricsPort: {metrics_port}", "metricsAddress: 127.0.0.1",
                     extra_config, "resources:"]  # the default health/socket poll (5 s), as deployed
            lines += [f"  - {{name: {n}, devices: [{self.node}], slots: {slots}}}" for n in names]
            config.write_text("\n".join(line for line in lines if line) + "\n")
            argv = [str(PLUGIN), "--config", str(config)]
        else:
            argv = [sys.executable, str(FLOOR), str(self.plugin_dir), *(f"{n}={slots}" for n in names)]
        started = time.monotonic()
        popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log,
                                 env={**os.environ, "PYTHONPATH": str(REPO / "plugin")})
        process = Process(kind, popen, names)
        last = 0.0
        try:
            for name in names:
                endpoint = self.kubelet.wait_registered(name, count=before[name] + 1, timeout_s=60)
                process.sockets[name] = endpoint.socket
                last = max(last, endpoint.registered_at)
        except BaseException:  # never leave a plugin running behind a failed start
            popen.kill()
            popen.wait()
            raise
        process.registered_after_s = last - started
        return process

    def slot_ids(self, resource: str) -> list[str]:
        return list(self.kubelet.latest(resource))


# The load generator runs in its own process, as the kubelet does, with grpc.aio:
# one thread, N coroutines, so the client's own GIL is not what is measured.
# argv: JSON file {"targets": [[socket, method, payload hex], ...], "callers": N, "each": N}
# Caller i uses target i % len(targets). Prints {"p50", "p99", "rate", "n"} (s, calls/s).
CLIENT = """
import asyncio, json, sys, time, grpc
spec = json.load(open(sys.argv[1]))
targets, callers, each = spec["targets"], spec["callers"], spec["each"]
async def main():
    channels = {s: grpc.aio.insecure_channel("unix://" + s, options=[("grpc.max_send_message_length", -1)])
                for s, _, _ in targets}
    calls = [(channels[s].unary_unary(m), bytes.fromhex(p)) for s, m, p in targets]
    async def worker(i, n, out):
        call, payload = calls[i % len(calls)]
        for _ in range(n):
            t = time.perf_counter()
            await call(payload, timeout=30)
            out.append(time.perf_counter() - t)
    await asyncio.gather(*(worker(i, 5, []) for i in range(max(callers, len(calls)))))  # warm-up: every target
    outs = [[] for _ in range(callers)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(i, each, out) for i, out in enumerate(outs)))
    wall = time.perf_counter() - started
    for channel in channels.values():
        await channel.close()
    lat = sorted(x for out in outs for x in out)
    print(json.dumps({"p50": lat[len(lat) // 2], "p99": lat[int(0.99 * (len(lat) - 1))], "rate": len(lat) / wall, "n": len(lat)}))
asyncio.run(main())
"""


@dataclass
class Load:
    p50: float
    p99: float
    rate: float
    n: int
    cpu_per_call_s: float  # of the server process, during the measured calls and the warm-up


def drive(server_pid: int, targets: list[tuple[Path, str, bytes]], callers: int, each: int) -> Load:
    """Run the client against ``targets``; the server's CPU is read around it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"targets": [[str(s), m, p.hex()] for s, m, p in targets], "callers": callers, "each": each}, spec)
    try:
        cpu_before = cpu_ns(server_pid)
        done = subprocess.run([sys.executable, "-c", CLIENT, spec.name], capture_output=True, text=True, timeout=900)
        cpu = (cpu_ns(server_pid) - cpu_before) / 1e9
    finally:
        os.unlink(spec.name)
    if done.returncode != 0:
        raise SystemExit(f"load client failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout)
    warmup = 5 * max(callers, len(targets))
    return Load(result["p50"], result["p99"], result["rate"], result["n"], cpu / (result["n"] + warmup))
