"""Device plugin benchmark: the real `kvminfo device-plugin` process against the
kubelet emulator, with floors measured in the same run on the same machine.

    .venv/bin/python bench/bench_plugin.py [--quick]

Measures: start -> Register; re-registration after a kubelet restart; health
propagation (device node removed -> Unhealthy on the stream); Allocate latency
and throughput with 1 and 16 concurrent callers beside a bare grpcio unary
call (the floor; both driven by a grpc.aio client in its own process); RSS after start and after 100,000 Allocate calls.
Prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import grpc  # noqa: E402
from kubelet_emulator import KubeletEmulator  # noqa: E402
from plugin_harness import make_char_device  # noqa: E402

from kvminfo_plugin.kubelet.server import MAX_WORKERS  # noqa: E402
from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api  # noqa: E402

KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
RESOURCE = "bench.kvminfo.io/dev"

# A bare grpcio server with one unary method and no work: the floor for Allocate.
# Same thread pool size as the plugin's (argv[2]), so only the work per call differs.
FLOOR_SERVER = """
import grpc, sys, time
from concurrent import futures
handler = grpc.method_handlers_generic_handler("floor.Floor", {
    "Call": grpc.unary_unary_rpc_method_handler(lambda request, context: b"",
                                               request_deserializer=None, response_serializer=None)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=int(sys.argv[2])))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("unix://" + sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.plugin_dir = workdir / "dp"
        self.plugin_dir.mkdir()
        self.devdir = workdir / "dev"
        self.devdir.mkdir()
        self.device = make_char_device(self.devdir / "benchdev")
        self.config = workdir / "plugin.yaml"
        self.config.write_text(f"pluginDir: {self.plugin_dir}\nmetricsPort: 0\npollIntervalSeconds: 60\n"
                               f"resources:\n  - name: {RESOURCE}\n    devices: [{self.device}]\n    slots: 1000\n")
        self.log = open(workdir / "plugin.log", "w")  # the plugin logs one line per Allocate; keep it off the tty
        self.kubelet = KubeletEmulator(self.plugin_dir).start()

    def start_plugin(self) -> tuple[subprocess.Popen[bytes], float]:
        before = len(self.kubelet.registrations)
        started = time.monotonic()
        process = subprocess.Popen([str(KVMINFO), "device-plugin", "--config", str(self.config)],
                                   stdout=subprocess.DEVNULL, stderr=self.log)
        endpoint = self.kubelet.wait_registered(RESOURCE, count=before + 1, timeout_s=20)
        return process, endpoint.registered_at - started

    @staticmethod
    def stop_plugin(process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        process.wait(10)


def floor_process_start(rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import grpc"], check=True)
        times.append(time.monotonic() - started)
    return times


# The load generator runs in its own process, as the kubelet does, with
# grpc.aio: one thread, N coroutines, so the client's own GIL does not become
# the thing measured. Prints {"p50", "p99", "rate", "n"} in seconds and calls/s.
CLIENT = """
import asyncio, json, sys, time, grpc
sock, method, payload, callers, each = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
async def main():
    async with grpc.aio.insecure_channel("unix://" + sock) as channel:
        call = channel.unary_unary(method)
        async def worker(n, out):
            for _ in range(n):
                t = time.perf_counter()
                await call(payload, timeout=10)
                out.append(time.perf_counter() - t)
        await asyncio.gather(*(worker(20, []) for _ in range(callers)))  # warm-up
        outs = [[] for _ in range(callers)]
        started = time.perf_counter()
        await asyncio.gather(*(worker(each, out) for out in outs))
        wall = time.perf_counter() - started
    lat = sorted(x for out in outs for x in out)
    print(json.dumps({"p50": lat[len(lat) // 2], "p99": lat[int(0.99 * (len(lat) - 1))], "rate": len(lat) / wall, "n": len(lat)}))
asyncio.run(main())
"""


def drive(socket_path: Path, method: str, payload: bytes, callers: int, calls_each: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CLIENT, str(socket_path), method, payload.hex(), str(callers), str(calls_each)],
                          capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout)


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Alternating repeated runs: the median of each figure (other load on a 2-core box is bursty)."""
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, figures not for the README)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 10
    calls = 300 if args.quick else 3000
    rss_calls = 10_000 if args.quick else 100_000

    load_start = os.getloadavg()[0]  # other work on the box skews every figure: say how much there was
    workdir = Path(tempfile.mkdtemp(prefix="kvminfo-bench-"))
    rows: list[tuple[str, str, str, str]] = []
    bench = Bench(workdir)
    try:
        # --- start -> Register --------------------------------------------------------
        starts = []
        for _ in range(max(3, rounds // 2)):
            process, took = bench.start_plugin()
            starts.append(took)
            bench.stop_plugin(process)
        floor = floor_process_start(len(starts))
        rows.append(("start -> Register (fresh process)", f"{statistics.median(starts) * 1000:.0f} ms",
                     f"{max(starts) * 1000:.0f} ms (max)", f"`python -c 'import grpc'`: {statistics.median(floor) * 1000:.0f} ms"))

        process, _ = bench.start_plugin()
        rss_start = rss_mib(process.pid)

        # --- re-registration after a kubelet restart -----------------------------------
        rereg = []
        for _ in range(max(10, rounds)):
            count = len(bench.kubelet.registrations)
            restarted = time.monotonic()
            bench.kubelet.restart()
            endpoint = bench.kubelet.wait_registered(RESOURCE, count=count + 1, timeout_s=10)
            rereg.append(endpoint.registered_at - restarted)
            time.sleep(0.1)
        rows.append((f"re-registration after kubelet restart (n={len(rereg)})", f"{statistics.median(rereg) * 1000:.1f} ms",
                     f"{max(rereg) * 1000:.1f} ms (max)", "target <= 100 ms"))

        # --- health propagation --------------------------------------------------------
        down, up = [], []
        for _ in range(rounds):
            t = time.monotonic()
            bench.device.unlink()
            bench.kubelet.wait_health(RESOURCE, lambda d: set(d.values()) == {"Unhealthy"}, timeout_s=10)
            down.append(time.monotonic() - t)
            t = time.monotonic()
            make_char_device(bench.device)
            bench.kubelet.wait_health(RESOURCE, lambda d: set(d.values()) == {"Healthy"}, timeout_s=10)
            up.append(time.monotonic() - t)
        rows.append((f"health: node removed -> Unhealthy seen (n={rounds})", f"{statistics.median(down) * 1000:.1f} ms",
                     f"{max(down) * 1000:.1f} ms (max)", "target <= 100 ms"))
        rows.append((f"health: node restored -> Healthy seen (n={rounds})", f"{statistics.median(up) * 1000:.1f} ms",
                     f"{max(up) * 1000:.1f} ms (max)", ""))
        back = []  # the node's whole directory removed, then recreated with the node
        for _ in range(rounds):
            bench.device.unlink()
            bench.devdir.rmdir()
            bench.kubelet.wait_health(RESOURCE, lambda d: set(d.values()) == {"Unhealthy"}, timeout_s=10)
            t = time.monotonic()
            bench.devdir.mkdir()
            make_char_device(bench.device)
            bench.kubelet.wait_health(RESOURCE, lambda d: set(d.values()) == {"Healthy"}, timeout_s=10)
            back.append(time.monotonic() - t)
        rows.append((f"health: node's directory recreated -> Healthy seen (n={rounds})", f"{statistics.median(back) * 1000:.1f} ms",
                     f"{max(back) * 1000:.1f} ms (max)", "target <= 1 s (poll: 60 s)"))

        # --- Allocate vs a bare grpcio unary call --------------------------------------
        floor_socket = workdir / "floor.sock"
        floor_server = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(floor_socket), str(MAX_WORKERS)],
                                        stdout=subprocess.PIPE)
        assert floor_server.stdout is not None and floor_server.stdout.readline().strip() == b"ready"
        plugin_socket = bench.plugin_dir / bench.kubelet.registrations[-1][1].endpoint
        slot = sorted(bench.kubelet.latest(RESOURCE))[0]
        request = api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=[slot])]).SerializeToString()
        allocate = (plugin_socket, "/v1beta1.DevicePlugin/Allocate", request)
        bare = (floor_socket, "/floor.Floor/Call", b"")
        for callers in (1, 16):
            each = calls // callers
            runs: dict[str, list[dict[str, float]]] = {"allocate": [], "bare": []}
            for _ in range(3):
                runs["allocate"].append(drive(*allocate, callers, each))
                runs["bare"].append(drive(*bare, callers, each))
            a, f = median_run(runs["allocate"]), median_run(runs["bare"])
            rows.append((f"Allocate, {callers} caller{'s' if callers > 1 else ''} ({int(a['n'])} calls x 3 runs)",
                         f"p50 {a['p50'] * 1000:.2f} ms", f"p99 {a['p99'] * 1000:.2f} ms, {a['rate']:,.0f} calls/s",
                         f"bare grpcio unary: p50 {f['p50'] * 1000:.2f} ms, p99 {f['p99'] * 1000:.2f} ms, {f['rate']:,.0f} calls/s; "
                         f"p99 ratio {a['p99'] / f['p99']:.2f}x" + (" (target <= 1.5x)" if callers == 16 else "")))
        floor_server.terminate()
        floor_server.wait()

        # --- RSS -----------------------------------------------------------------------
        # The first calls grow the server's thread pool (up to MAX_WORKERS threads); a leak
        # would keep growing after that, so the curve is sampled at 10% too.
        rss_before = rss_mib(process.pid)
        drive(*allocate, 16, rss_calls // 10 // 16)
        rss_tenth = rss_mib(process.pid)
        drive(*allocate, 16, (rss_calls - rss_calls // 10) // 16)
        rss_after = rss_mib(process.pid)
        rows.append(("RSS after start (registered, serving)", f"{rss_start:.1f} MiB", "", "target <= 60 MB"))
        rows.append((f"RSS after {rss_calls:,} Allocate calls (16 callers)", f"{rss_after:.1f} MiB",
                     f"{rss_after - rss_start:+.1f} MiB since start ({rss_before - rss_start:+.1f} of it during the latency runs); "
                     f"{rss_after - rss_tenth:+.1f} MiB over the last 90% of these calls",
                     "target growth <= 5 MB"))
        bench.stop_plugin(process)
    finally:
        bench.kubelet.stop()
        bench.log.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nDevice plugin, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, grpcio {grpc.__version__}, "
          f"{MAX_WORKERS} server threads (plugin and floor); 1-min load average {load_start:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print("| what | median / p50 | spread | floor or target, same run |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
