"""How fast `kvminfo labels` and the NFD hook start, against the bare interpreter in the same run.

NFD runs every hook on every node every minute, so the hook's cost is a
fresh process. This measures, interleaved (so machine noise hits all alike):
  floor:  PYTHON -c pass
  hook:   nfd-hooks/kvm-caps-info-nfd-plugin --no-libvirt   (KVMINFO_PYTHON=PYTHON;
          it runs `kvminfo labels --family caps --no-libvirt`)
  labels: PYTHON -c 'kvminfo.cli.main(["labels", "--no-libvirt"])', the default families
wall time (median, p99) and peak RSS, then the full `kvminfo labels` with
libvirt for reference. PYTHON is the checkout's .venv/bin/python (an editable
install under pyenv, where `python -c pass` itself takes ~22 ms), or --python:
e.g. a venv of Debian's /usr/bin/python3 with `pip install --no-deps .`, as in
an image, where it takes ~8 ms, so the same hook is a larger multiple of it.

Peak RSS: os.wait4's ru_maxrss of a child also counts the pages it shared
with this (bigger) bench process at fork, so it is only an upper bound
(~13.6 MB for `python -c pass`, whose real peak is ~10.8 MB). When GNU time
(/usr/bin/time, Debian package "time") is installed, the RSS column comes
from it instead: it forks from a ~2 MB process, so its %M is the child's own.
Guard rail (issue 18, on the 2-core development machine): `kvminfo labels
--no-libvirt` as a fresh process, median <= 100 ms. Reported, never asserted in tests.

  .venv/bin/python bench/bench_hook.py [--pairs 40] [--full-runs 10] [--python PY] [--json]
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
PYTHON = REPO / ".venv" / "bin" / "python"
HOOK = REPO / "nfd-hooks" / "kvm-caps-info-nfd-plugin"
KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
LABELS_GUARD_MS = 100.0
GNU_TIME = "/usr/bin/time"
RSS_RUNS = 5


def run_once(argv: list[str]) -> tuple[float, float]:
    """(wall ms, peak RSS MB) of one fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall_ms = (time.perf_counter() - started) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return wall_ms, usage.ru_maxrss / 1024  # Linux reports KiB


def gnu_time_rss_mb(argv: list[str]) -> float:
    """Peak RSS of one run as GNU time reports it (see the module docstring)."""
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run([GNU_TIME, "-f", "%M", "-o", out.name, *argv], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return int(out.read().split()[-1]) / 1024


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def summary(samples: list[tuple[float, float]], argv: list[str]) -> dict[str, object]:
    walls = [w for w, _ in samples]
    result: dict[str, object] = {"median_ms": round(statistics.median(walls), 2), "p99_ms": round(p99(walls), 2),
                                 "runs": len(samples)}
    if shutil.which(GNU_TIME):
        result["peak_rss_mb"] = round(max(gnu_time_rss_mb(argv) for _ in range(RSS_RUNS)), 1)
        result["rss_by"] = "gnu-time"
    else:
        result["peak_rss_mb"] = round(max(r for _, r in samples), 1)
        result["rss_by"] = "wait4 (upper bound)"
    return result


def precompile(python: str) -> None:
    """An installed package (pip, container image) ships bytecode; an editable
    checkout under PYTHONDONTWRITEBYTECODE=1 has none and would recompile
    every module on every run (~15 ms here), which is not what NFD pays."""
    if python == str(PYTHON):
        subprocess.run([python, "-m", "compileall", "-q", str(REPO / "kvminfo")], check=True)


def measure(pairs: int, full_runs: int, python: str) -> dict[str, object]:
    precompile(python)
    os.environ["KVMINFO_PYTHON"] = python  # the hook execs it (nfd-hooks/)
    floor_argv = [python, "-c", "pass"]
    hook_argv = [str(HOOK), "--no-libvirt"]
    cli_argv = [python, "-c", "import sys; from kvminfo.cli import main; "
                "sys.exit(main(['labels', '--no-libvirt']))"]
    for argv in (floor_argv, hook_argv, cli_argv):  # warm the page cache; not counted
        run_once(argv)
    floor: list[tuple[float, float]] = []
    hook: list[tuple[float, float]] = []
    cli: list[tuple[float, float]] = []  # kvminfo labels --no-libvirt
    for i in range(pairs):
        order = [(floor, floor_argv), (hook, hook_argv), (cli, cli_argv)]
        for samples, argv in order if i % 2 == 0 else reversed(order):
            samples.append(run_once(argv))
    result: dict[str, object] = {"python": python, "floor": summary(floor, floor_argv), "hook": summary(hook, hook_argv),
                                 "labels_no_libvirt": summary(cli, cli_argv), "load_average": os.getloadavg()[0]}
    if full_runs and python == str(PYTHON):
        full_argv = [str(KVMINFO), "labels"]
        full = [run_once(full_argv) for _ in range(full_runs)]
        result["labels_with_libvirt"] = summary(full, full_argv)
    result["within_guard_rail"] = result["labels_no_libvirt"]["median_ms"] <= LABELS_GUARD_MS  # type: ignore[index]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40,
                        help="interleaved floor/hook/labels rounds (default: %(default)s)")
    parser.add_argument("--full-runs", type=int, default=10,
                        help="runs of the full `kvminfo labels` with libvirt; 0 skips (default: %(default)s)")
    parser.add_argument("--python", default=str(PYTHON),
                        help="interpreter with kvminfo installed, for the floor and the hook (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.pairs < 20:
        parser.error("--pairs must be at least 20 (the median needs them)")
    result = measure(args.pairs, args.full_runs, args.python)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{'':28} {'median ms':>10} {'p99 ms':>8} {'peak RSS MB':>12}")
        print(f"python: {result['python']}, load average {os.getloadavg()[0]:.2f}")
        rows = [("python -c pass (floor)", "floor"), ("hook --no-libvirt", "hook"),
                ("kvminfo labels --no-libvirt", "labels_no_libvirt"), ("kvminfo labels (libvirt)", "labels_with_libvirt")]
        for title, key in rows:
            if key in result:
                r = result[key]
                print(f"{title:28} {r['median_ms']:>10.2f} {r['p99_ms']:>8.2f} {r['peak_rss_mb']:>12.1f}")
        print(f"peak RSS measured by {result['hook']['rss_by']}")  # type: ignore[index]
        median = result["labels_no_libvirt"]["median_ms"]  # type: ignore[index]
        print(f"kvminfo labels --no-libvirt median {median} ms, guard rail <= {LABELS_GUARD_MS:g} ms: "
              f"{'held' if result['within_guard_rail'] else 'NOT held'}")
    return 0 if result["within_guard_rail"] else 1


if __name__ == "__main__":
    sys.exit(main())
