"""Benchmark the libvirt source and `kvminfo features-file`, each against a floor measured in the same run.

    .venv/bin/python bench/bench_libvirt_featurefile.py [--rounds N]

1. parse_domcaps on each recorded fixture (in-process), floor: ElementTree.fromstring alone.
2. probe_libvirt on the live qemu:///system, floor: libvirt-python's open +
   getDomainCapabilities + close alone (what libvirt itself costs).
3. A fresh `kvminfo features-file` process (--no-libvirt, and with libvirt),
   floor: `.venv/bin/python -c pass`; interleaved pairs; peak RSS per process.
4. The sidecar's resident memory after a few ticks and its CPU per round
   (--interval 1s, with and without libvirt).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
FIXTURES = REPO / "tests" / "fixtures" / "domcaps"
URI = "qemu:///system"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, samples: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    med, p99 = statistics.median(samples) * scale, percentile(samples, 99) * scale
    return f"{name:<46} median {med:9.3f} {unit}  p99 {p99:9.3f} {unit}  (n={len(samples)})"


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def run_child(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process.

    Linux carries ru_maxrss across execve, so a child spawned from this
    (bigger) process would report our RSS as its own; GNU time is a small
    parent whose fork is what we measure. Floor and subjects pay it alike.
    """
    with tempfile.NamedTemporaryFile("r") as rss_file:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *argv],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{argv} exited {done.returncode}")
        return wall, int(rss_file.read().split()[-1])


def bench_parse(rounds: int) -> None:
    from kvminfo.sources.domcaps import parse_domcaps

    print("# parse_domcaps (in-process)")
    for path in sorted(FIXTURES.glob("*.xml")):
        text = path.read_text()
        floor = timed(functools.partial(ET.fromstring, text), rounds)
        ours = timed(functools.partial(parse_domcaps, text), rounds)
        print(summary(f"  floor ET.fromstring {path.name[:24]}", floor, "µs", 1e6))
        print(summary(f"  parse_domcaps       {path.name[:24]}", ours, "µs", 1e6))


def bench_live(rounds: int) -> None:
    import libvirt

    from kvminfo.sources.libvirt import probe_libvirt

    def raw() -> None:
        conn = libvirt.open(URI)
        conn.getDomainCapabilities(None, None, None, "kvm")
        conn.close()

    raw()  # warm libvirt's QEMU capabilities cache
    floor, ours = [], []
    for _ in range(rounds):  # interleaved so drift hits both alike
        floor += timed(raw, 1)
        ours += timed(lambda: probe_libvirt(URI, 10.0), 1)
    print("# live libvirt (qemu:///system, warm cache)")
    print(summary("  floor libvirt open+getDomainCapabilities", floor))
    print(summary("  probe_libvirt (thread + parse)", ours))


def bench_processes(rounds: int, workdir: Path) -> None:
    out = workdir / "kvminfo"
    commands = {
        "floor python -c pass": [str(PYTHON), "-c", "pass"],
        "features-file --no-libvirt": [str(KVMINFO), "features-file", "-o", str(out), "--no-libvirt"],
        "features-file (kvm + libvirt)": [str(KVMINFO), "features-file", "-o", str(out)],
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, list[int]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            wall, peak = run_child(argv)
            walls[name].append(wall)
            rss[name].append(peak)
    print("# fresh processes (interleaved)")
    floor = statistics.median(walls["floor python -c pass"])
    for name in commands:
        ratio = statistics.median(walls[name]) / floor
        print(f"{summary('  ' + name, walls[name])}  {ratio:5.1f}x floor  peak RSS {max(rss[name]) / 1024:.1f} MiB")


def _cpu_ns(pid: int) -> int:
    """Run time of every thread of ``pid`` so far (schedstat, ns)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def bench_sidecar(workdir: Path, window_s: float = 10.0) -> None:
    """The sidecar's RSS after a few ticks, and its CPU per round (--interval 1s)
    over ``window_s`` once warm, with and without libvirt."""
    for label, extra in (("kvm + libvirt", []), ("kvm only, --no-libvirt", ["--no-libvirt"])):
        out = workdir / "sidecar"
        proc = subprocess.Popen([str(KVMINFO), "features-file", "-o", str(out), "--interval", "1s", *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2.5)  # imports and the first rounds done
            before, started = _cpu_ns(proc.pid), time.monotonic()
            time.sleep(window_s)
            per_round_ms = (_cpu_ns(proc.pid) - before) / 1e6 / (time.monotonic() - started)  # one round a second
            status = Path(f"/proc/{proc.pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            print(f"# sidecar (--interval 1s, {label}), {window_s:.0f} s window once warm; "
                  f"1-min load average {os.getloadavg()[0]:.2f}")
            print(f"  RSS {fields['VmRSS'].strip()}, peak {fields['VmHWM'].strip()}, threads {fields['Threads'].strip()}, "
                  f"CPU {per_round_ms:.1f} ms per round")
        finally:
            proc.terminate()
            proc.wait(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="samples per measurement (default: %(default)s)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="kvminfo-bench.") as workdir:
        bench_processes(args.rounds, Path(workdir))
        bench_sidecar(Path(workdir))
    bench_parse(args.rounds * 10)
    bench_live(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
