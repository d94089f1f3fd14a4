"""What the device plugin costs a node while it only sits there: idle CPU, RSS,
start -> Register and SIGTERM -> exit, each beside the floor (bench/floor_plugin.py,
a minimal plain-grpcio plugin) measured in the same run on the same kubelet emulator.

    .venv/bin/python bench/bench_footprint.py [--idle-seconds 60] [--rounds 6] [--quick]

- start -> Register: fresh process until the kubelet emulator holds its device
  list; kvminfo and floor alternate, ``--rounds`` each. kvminfo runs with
  metrics on (an HTTP port), as deployed.
- SIGTERM -> exit: of those same processes, 0.5 s after registering.
- idle CPU: one kvminfo (metrics on, and once more with metrics off) and one
  floor, all registered with one ListAndWatch stream open, measured over the
  same ``--idle-seconds``: CPU (all threads, ns from schedstat) per minute and
  wakeups (context switches) per second.
- RSS after start, after a burst of Allocates (16 callers) and of /metrics
  scrapes.
- Import cost: RSS and time each module the plugin imports adds on top of the
  floor's imports (grpc + the v1beta1 modules), each in a fresh interpreter.

The 1-minute load average is printed at the start and the end: this box is
shared, and every figure moves with it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from pluginrig import REPO, Rig, cpu_ns, drive, load_average, median, per_thread, rss_mib, threads, wakeups

from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api

# (label, statement) measured on top of the floor's own imports.
FLOOR_IMPORTS = "import grpc; from kvminfo_plugin.kubelet.v1beta1 import api_pb2, api_pb2_grpc"
IMPORTS = [
    ("yaml", "import yaml"),
    ("prometheus_client", "import prometheus_client"),
    ("prometheus_client + wsgiref.simple_server", "import prometheus_client, wsgiref.simple_server; "
                                                  "from prometheus_client.exposition import ThreadingWSGIServer"),
    ("inotify_simple", "import inotify_simple"),
    ("importlib.metadata, kvminfo.commands read", "from importlib.metadata import entry_points; "
                                                  "entry_points(group='kvminfo.commands')"),
    ("logging + argparse", "import logging, argparse"),
    ("kvminfo.common.errors + logsetup", "import kvminfo.common.errors, kvminfo.common.logsetup"),
    ("kvminfo_plugin.main (config, argparse, yaml, CDI)", "import kvminfo_plugin.main"),
    ("kvminfo_plugin.runtime (everything, metrics included)", "import kvminfo_plugin.main, kvminfo_plugin.runtime"),
]
IMPORT_PROBE = """
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
exec(sys.argv[1])
r0, t0 = rss(), time.perf_counter()
exec(sys.argv[2])
print(rss() - r0, time.perf_counter() - t0)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_costs(rounds: int) -> list[tuple[str, float, float]]:
    rows = []
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugin")}
    for label, statement in IMPORTS:
        samples = []
        for _ in range(rounds):
            out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, FLOOR_IMPORTS, statement], env=env,
                                 capture_output=True, text=True, check=True).stdout.split()
            samples.append((float(out[0]), float(out[1])))
        rows.append((label, median([s[0] for s in samples]), median([s[1] for s in samples])))
    return rows


ThreadRow = tuple[str, int, float, float]  # (name, thread ID, CPU ms per minute, wakeups/s)


def idle(rig: Rig, seconds: float, metrics_port: int) -> tuple[list[tuple[str, float, float, float, int]],
                                                                 dict[str, list[ThreadRow]]]:
    """[(what, CPU ms per minute, wakeups/s, RSS MiB, threads)] over the same window,
    and each process's threads that ran in it."""
    procs = [("kvminfo, metrics on", rig.start("kvminfo", 1000, metrics_port=metrics_port)),
             ("kvminfo, metrics off", rig.start("kvminfo", 1000)),
             ("floor", rig.start("floor", 1000))]
    try:
        time.sleep(3)  # start-up work and the first stream are done
        before = [(cpu_ns(p.pid), wakeups(p.pid), per_thread(p.pid)) for _, p in procs]
        started = time.monotonic()
        time.sleep(seconds)
        took = time.monotonic() - started
        after = [(cpu_ns(p.pid), wakeups(p.pid), per_thread(p.pid)) for _, p in procs]
        rows = []
        by_thread: dict[str, list[ThreadRow]] = {}
        for (what, p), (c0, w0, t0), (c1, w1, t1) in zip(procs, before, after, strict=True):
            rows.append((what, (c1 - c0) / 1e6 * 60 / took, (w1 - w0) / took, rss_mib(p.pid), threads(p.pid)))
            by_thread[what] = sorted(((name, tid, (ran - t0.get(tid, (name, 0, 0))[1]) / 1e6 * 60 / took,
                                       (sw - t0.get(tid, (name, 0, 0))[2]) / took)
                                      for tid, (name, ran, sw) in t1.items()
                                      if ran != t0.get(tid, (name, 0, 0))[1]), key=lambda r: -r[2])
        return rows, by_thread
    finally:
        for _, p in procs:
            p.terminate()


def start_exit(rig: Rig, rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    """kind -> (start -> Register s, SIGTERM -> exit s), alternating kinds."""
    out: dict[str, tuple[list[float], list[float]]] = {"kvminfo": ([], []), "floor": ([], [])}
    for i in range(rounds * 2):
        kind = ("kvminfo", "floor")[i % 2]
        process = rig.start(kind, 1000, metrics_port=free_port() if kind == "kvminfo" else 0)
        time.sleep(0.5)
        out[kind][0].append(process.registered_after_s)
        out[kind][1].append(process.terminate())
    return out


def rss_burst(rig: Rig, calls: int, metrics_port: int) -> list[tuple[str, float, float, float]]:
    """[(what, RSS after start, after `calls` Allocates, after 1,000 /metrics scrapes)]."""
    rows = []
    for kind in ("kvminfo", "floor"):
        process = rig.start(kind, 1000, metrics_port=metrics_port if kind == "kvminfo" else 0)
        try:
            time.sleep(1)
            start = rss_mib(process.pid)
            name = process.resources[0]
            slot = rig.slot_ids(name)[0]
            request = api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=[slot])])
            drive(process.pid, [(process.sockets[name], "/v1beta1.DevicePlugin/Allocate", request.SerializeToString())],
                  16, calls // 16)
            after_allocate = rss_mib(process.pid)
            scraped = after_allocate
            if kind == "kvminfo":
                def scrape() -> None:
                    for _ in range(250):
                        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
                            r.read()
                workers = [threading.Thread(target=scrape) for _ in range(4)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                scraped = rss_mib(process.pid)
            rows.append((kind, start, after_allocate, scraped))
        finally:
            process.terminate()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=6, help="start/exit rounds per kind (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="10 s idle, 3 rounds, small bursts (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.idle_seconds, args.rounds = 10.0, 3
    burst = 5_000 if args.quick else 50_000
    load_start = load_average()
    rig = Rig()
    try:
        costs = import_costs(3 if args.quick else 7)
        timings = start_exit(rig, args.rounds)
        idle_rows, idle_threads = idle(rig, args.idle_seconds, free_port())
        rss_rows = rss_burst(rig, burst, free_port())
    finally:
        rig.close()
    load_end = load_average()

    print(f"\nDevice plugin footprint, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
          f"1-min load average {load_start:.2f} at start, {load_end:.2f} at the end\n")
    print("| what | kvminfo | floor (plain grpcio), same run |")
    print("|---|---|---|")
    (ks, kx), (fs, fx) = timings["kvminfo"], timings["floor"]
    print(f"| start -> Register, median (max), n={len(ks)} | {median(ks) * 1000:.0f} ms ({max(ks) * 1000:.0f}) = "
          f"{median(ks) / median(fs):.2f}x floor | {median(fs) * 1000:.0f} ms ({max(fs) * 1000:.0f}) |")
    print(f"| SIGTERM -> exit (metrics on), median (max) | {median(kx) * 1000:.0f} ms ({max(kx) * 1000:.0f}) | "
          f"{median(fx) * 1000:.0f} ms ({max(fx) * 1000:.0f}) |")
    floor_idle = next(r for r in idle_rows if r[0] == "floor")
    for what, cpu, wake, rss, nthreads in idle_rows:
        if what != "floor":
            print(f"| idle CPU per minute, {what} ({args.idle_seconds:.0f} s, one stream open) | {cpu:.0f} ms, "
                  f"{wake:.1f} wakeups/s, {nthreads} threads, RSS {rss:.1f} MiB | {floor_idle[1]:.0f} ms, "
                  f"{floor_idle[2]:.1f} wakeups/s, {floor_idle[4]} threads, RSS {floor_idle[3]:.1f} MiB |")
    k = next(r for r in rss_rows if r[0] == "kvminfo")
    f = next(r for r in rss_rows if r[0] == "floor")
    print(f"| RSS after start (metrics on) | {k[1]:.1f} MiB (floor {k[1] - f[1]:+.1f}) | {f[1]:.1f} MiB |")
    print(f"| RSS after {burst:,} Allocates (16 callers) | {k[2]:.1f} MiB (floor {k[2] - f[2]:+.1f}) | {f[2]:.1f} MiB |")
    print(f"| RSS after 1,000 /metrics scrapes (4 at once) | {k[3]:.1f} MiB | |")
    print("\nIdle threads that ran (grpcio's C++ threads carry their own names; Python threads, grpcio's "
          "completion-queue poller among them, the process's):\n")
    print("| process | thread: CPU ms per minute, wakeups/s |")
    print("|---|---|")
    for what, rows in idle_threads.items():
        print(f"| {what} | " + "; ".join(f"{name} {tid}: {cpu:.1f}, {wake:.2f}" for name, tid, cpu, wake in rows) + " |")
    print("\nImports on top of the floor's (grpc + v1beta1), fresh interpreter each, median:\n")
    print("| import | RSS added | time |")
    print("|---|---|---|")
    for label, rss, took in costs:
        print(f"| {label} | {rss:+.1f} MiB | {took * 1000:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
