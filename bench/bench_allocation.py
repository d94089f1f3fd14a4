"""GetPreferredAllocation and Allocate at scale: the real `kvminfo device-plugin`
beside the floor (bench/floor_plugin.py, a minimal plain-grpcio plugin), same
run, same kubelet emulator, same load client (grpc.aio in its own process).

    .venv/bin/python bench/bench_allocation.py [--quick] [--part preferred|allocate|both]

- GetPreferredAllocation at 10, 1,000, 10,000 and 100,000 slots: the request the
  kubelet sends when a container asks for one unit (every slot available, none
  must-include, size 1): p50 / p99 latency, the server's CPU per call, RSS
  before and after the burst (and 2 s later).
- Allocate (one container, one slot) at 1/4/16/64 concurrent callers, with
  10/1,000/10,000 slots and 1 or 10 resources (callers spread over the
  resources' sockets): p50, p99, calls/s and the server's CPU per call; the
  last column is kvminfo's CPU per call over the floor's. Each cell is the
  median of 3 runs, kvminfo and floor alternating.

CPU per call is the server process's run time (all threads, schedstat)
during the calls divided by the calls: it moves less with other load on the
box than latency does. The 1-minute load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from pluginrig import Load, Rig, drive, load_average, rss_mib

from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api

PREFERRED = "/v1beta1.DevicePlugin/GetPreferredAllocation"
ALLOCATE = "/v1beta1.DevicePlugin/Allocate"


def preferred(rig: Rig, quick: bool, slot_counts: list[int]) -> list[str]:
    lines = ["| slots | kvminfo p50 / p99 | kvminfo CPU per call | kvminfo RSS: start -> after burst -> 2 s later "
             "| floor p50 / p99 | floor CPU per call | floor RSS: start -> after -> 2 s later |", "|---" * 7 + "|"]
    for slots in slot_counts:
        calls = {10: 2000, 1_000: 1000, 10_000: 300, 100_000: 40}[slots] // (4 if quick else 1)
        row = [f"{slots:,}"]
        for kind in ("kvminfo", "floor"):
            process = rig.start(kind, slots)
            try:
                name = process.resources[0]
                request = api.PreferredAllocationRequest(container_requests=[api.ContainerPreferredAllocationRequest(
                    available_deviceIDs=rig.slot_ids(name), allocation_size=1)]).SerializeToString()
                time.sleep(1)
                start = rss_mib(process.pid)
                load = drive(process.pid, [(process.sockets[name], PREFERRED, request)], 1, calls)
                after = rss_mib(process.pid)
                time.sleep(2)
                later = rss_mib(process.pid)
                row += [f"{load.p50 * 1000:.2f} / {load.p99 * 1000:.2f} ms", f"{load.cpu_per_call_s * 1000:.2f} ms",
                        f"{start:.1f} -> {after:.1f} -> {later:.1f} MiB"]
            finally:
                process.terminate()
        lines.append("| " + " | ".join(row) + " |")
    return lines


def median_load(runs: list[Load]) -> Load:
    """Each figure's median over alternating repeated runs."""
    return Load(*(statistics.median(getattr(r, f) for r in runs)
                  for f in ("p50", "p99", "rate", "n", "cpu_per_call_s")))


def allocate(rig: Rig, quick: bool, slot_counts: list[int], resource_counts: list[int], caller_counts: list[int],
             repeat: int) -> list[str]:
    lines = ["| slots | resources | callers | kvminfo p50 / p99 | kvminfo calls/s | kvminfo CPU per call "
             "| floor p50 / p99 | floor calls/s | floor CPU per call | CPU kvminfo / floor |", "|---" * 10 + "|"]
    calls = 600 if quick else 2000
    for slots in slot_counts:
        for resources in resource_counts:
            procs = {kind: rig.start(kind, slots, resources) for kind in ("kvminfo", "floor")}
            try:
                targets = {}
                for kind, process in procs.items():
                    targets[kind] = []
                    for name in process.resources:
                        slot = rig.slot_ids(name)[0]
                        request = api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=[slot])])
                        targets[kind].append((process.sockets[name], ALLOCATE, request.SerializeToString()))
                for callers in caller_counts:
                    runs: dict[str, list[Load]] = {"kvminfo": [], "floor": []}
                    for _ in range(repeat):  # alternating: bursts of other load hit both alike
                        for kind in ("kvminfo", "floor"):
                            runs[kind].append(drive(procs[kind].pid, targets[kind], callers, max(1, calls // callers)))
                    k, f = median_load(runs["kvminfo"]), median_load(runs["floor"])
                    lines.append(f"| {slots:,} | {resources} | {callers} | {k.p50 * 1000:.2f} / {k.p99 * 1000:.2f} ms | "
                                 f"{k.rate:,.0f} | {k.cpu_per_call_s * 1e6:.0f} us | {f.p50 * 1000:.2f} / {f.p99 * 1000:.2f} ms | "
                                 f"{f.rate:,.0f} | {f.cpu_per_call_s * 1e6:.0f} us | {k.cpu_per_call_s / f.cpu_per_call_s:.2f} |")
            finally:
                for process in procs.values():
                    process.terminate()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run, figures not for the README)")
    parser.add_argument("--part", choices=("preferred", "allocate", "both"), default="both")
    parser.add_argument("--preferred-slots", type=int, nargs="+", default=[10, 1_000, 10_000, 100_000],
                        help="GetPreferredAllocation: slot counts")
    parser.add_argument("--slots", type=int, nargs="+", default=[10, 1_000, 10_000], help="Allocate: slot counts")
    parser.add_argument("--resources", type=int, nargs="+", default=[1, 10], help="Allocate: resource counts")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 4, 16, 64], help="Allocate: concurrent callers")
    parser.add_argument("--repeat", type=int, default=3, help="Allocate: alternating runs per cell (median)")
    args = parser.parse_args()
    load_start = load_average()
    rig = Rig()
    out = []
    try:
        if args.part in ("preferred", "both"):
            out += ["", "GetPreferredAllocation (every slot available, size 1):", ""] + preferred(rig, args.quick, args.preferred_slots)
        if args.part in ("allocate", "both"):
            out += ["", "Allocate (one container, one slot):", ""] + allocate(rig, args.quick, args.slots, args.resources, args.callers,
                                                                        1 if args.quick else args.repeat)
    finally:
        rig.close()
    print(f"\nDevice plugin allocation, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
          f"1-min load average {load_start:.2f} at start, {load_average():.2f} at the end")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
