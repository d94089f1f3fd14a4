"""`kvminfo publish` benchmark against the API server stand-in, with floors
measured in the same run on the same machine.

    .venv/bin/python bench/bench_publish.py [--rounds N]

Measures:
- one publish round in-process (read + compare; and read + compare + update),
  beside the floor: a bare urllib3 GET of the same object from the same
  stand-in (what any client pays for one round trip);
- the one-shot command (`kvminfo publish`, object unchanged) beside
  `kvminfo labels --no-libvirt` (the same probe, no API: the floor), i.e.
  what importing and setting up the `kubernetes` client costs per start;
- RSS of the `--interval` process after its first round and after 20 more
  (a leak per round would show).
Prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import urllib3  # noqa: E402
from apiserver_standin import TOKEN, ApiServerStandin  # noqa: E402

from kvminfo.collect import collect  # noqa: E402
from kvminfo.model import ProbeOptions  # noqa: E402
from kvminfo.output.nodefeature import build_nodefeature  # noqa: E402
from kvminfo.output.nodefeature_client import NodeFeatureStore, load_api_client, publish_once  # noqa: E402

KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
NODE, NS = "bench-node", "kvminfo"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(action: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def row(name: str, samples: list[float], floor: list[float] | None = None) -> str:
    median, p99 = statistics.median(samples), percentile(samples, 0.99)
    ratio = f"{median / statistics.median(floor):.1f}x" if floor else "floor"
    return f"| {name} | {len(samples)} | {median:.2f} | {p99:.2f} | {ratio} |"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_for(process: subprocess.Popen, text: str, count: int = 1, timeout: float = 120) -> None:
    seen, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError(f"process ended before {text!r}")
        seen += text in line
        if seen >= count:
            return
    raise RuntimeError(f"{text!r} not seen {count} times")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300, help="in-process rounds per row (default: %(default)s)")
    parser.add_argument("--starts", type=int, default=10, help="process starts per row (default: %(default)s)")
    args = parser.parse_args()

    standin = ApiServerStandin().start()
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = standin.write_kubeconfig(Path(tmp) / "kubeconfig")
        store = NodeFeatureStore(load_api_client(str(kubeconfig)), NS)
        report = collect(ProbeOptions(use_libvirt=False))
        desired = build_nodefeature(report, NODE, NS)
        assert publish_once(store, desired).action == "created"
        path = f"{standin.url}/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/{NS}/nodefeatures/kvminfo-{NODE}"
        http = urllib3.PoolManager()
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        floor = timed(lambda: http.request("GET", path, headers=headers).data, args.rounds)
        unchanged = timed(lambda: publish_once(store, desired), args.rounds)
        flip = [desired, build_nodefeature(report, NODE, NS)]
        flip[1]["spec"]["labels"] = {**flip[1]["spec"]["labels"], "bench": "flip"}
        counter = iter(range(10**9))
        changed = timed(lambda: publish_once(store, flip[next(counter) % 2]), args.rounds)

        base = [str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE, "--namespace", NS,
                "--no-libvirt"]
        env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "NODE_NAME")}
        subprocess.run(base, check=True, capture_output=True, env=env)  # object now matches a real probe
        labels_start = timed(lambda: subprocess.run([str(KVMINFO), "labels", "--no-libvirt"], check=True,
                                                    capture_output=True), args.starts)
        publish_start = timed(lambda: subprocess.run(base, check=True, capture_output=True, env=env), args.starts)

        process = subprocess.Popen(base + ["--interval", "1s"], stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_for(process, "unchanged")
            rss_first = rss_kib(process.pid)
            wait_for(process, "unchanged", count=20)
            rss_later = rss_kib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
    standin.stop()

    print("| what | n | median ms | p99 ms | vs floor |")
    print("|---|---|---|---|---|")
    print(row("bare GET of the object (urllib3, floor)", floor))
    print(row("publish round, unchanged (GET + compare)", unchanged, floor))
    print(row("publish round, changed (GET + compare + PUT)", changed, floor))
    print(row("`kvminfo labels --no-libvirt` process (floor)", labels_start))
    print(row("`kvminfo publish` one-shot process, unchanged", publish_start, labels_start))
    print(f"\nRSS of `kvminfo publish --interval 1s`: {rss_first / 1024:.1f} MiB after the first round, "
          f"{rss_later / 1024:.1f} MiB after 20 more ({(rss_later - rss_first) / 1024:+.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
