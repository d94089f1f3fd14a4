"""DRA driver benchmark against the kubelet DRA emulator and the resource.k8s.io stand-in
(tests/), on this machine's real /dev/kvm and libvirt.

    .venv/bin/python bench/bench_dra.py [--rounds N] [--starts N]

Measures:
- start -> slices published: `kvminfo-dra-driver` as a process, from exec until the
  stand-in holds the node's slice (probe, CDI spec, sockets, registration, publish),
  beside the same process's start until registration only;
- NodePrepareResources p50/p99 over the wire (one claim per call, v1, the claim read
  from the stand-in each time), beside the floor: the stand-in GET of the same claim
  with the same client (what any prepare that reads the allocation pays);
- facts change -> new pool generation: a device node vanishing until the stand-in
  holds generation + 1 (the driver checks device nodes every 5 s by default; here its
  health interval is 0.1 s, so the figure is the work, not the poll).
Prints a markdown table for the docs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from dra_apiserver_standin import DraApiServerStandin  # noqa: E402
from dra_kubelet_emulator import DraKubelet  # noqa: E402

from kvminfo_dra.apiserver import ResourceApi  # noqa: E402
from kvminfo_dra.driver import Driver, DriverConfig  # noqa: E402
from kvminfo_dra.upstream import load_api_client  # noqa: E402

DRIVER, NODE = "kvm.kvminfo.io", "bench-node"
SCRIPT = REPO / ".venv" / "bin" / "kvminfo-dra-driver"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.002)


def bench_start(starts: int) -> tuple[list[float], list[float]]:
    registered, published = [], []
    for _ in range(starts):
        root = Path(tempfile.mkdtemp(prefix="dra-", dir="/tmp"))
        standin = DraApiServerStandin().start()
        kubelet = DraKubelet(root / "kubelet", wipe=lambda driver, s=standin: s.wipe(NODE, driver))
        kubeconfig = standin.write_kubeconfig(root / "kubeconfig")
        began = time.monotonic()
        process = subprocess.Popen([str(SCRIPT), "--node-name", NODE, "--kubelet-root", str(root / "kubelet"),
                                    "--cdi-dir", str(root / "cdi"), "--kubeconfig", str(kubeconfig)],
                                   stderr=subprocess.DEVNULL)
        try:
            kubelet.wait_registered(DRIVER, timeout=60)
            registered.append(time.monotonic() - began)
            wait(lambda s=standin: bool(s.pool(NODE)))
            published.append(time.monotonic() - began)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            kubelet.close()
            standin.stop()
            shutil.rmtree(root, ignore_errors=True)
    return registered, published


def bench_prepare_and_generation(rounds: int) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="dra-", dir="/tmp"))
    standin = DraApiServerStandin().start()
    kubelet = DraKubelet(root / "kubelet", wipe=lambda driver: standin.wipe(NODE, driver))
    api = ResourceApi(load_api_client(str(standin.write_kubeconfig(root / "kubeconfig"))))
    node = root / "extra-node"
    node.write_text("")
    config = DriverConfig(node=NODE, kubelet_root=root / "kubelet", cdi_dir=root / "cdi",
                          others={"extra": ("char", str(node))}, health_interval_s=0.1, retry_s=0.1)
    driver = Driver(config, api).start()
    out: dict[str, list[float]] = {"prepare": [], "floor": [], "generation": []}
    try:
        kubelet.wait_registered(DRIVER)
        wait(lambda: bool(standin.pool(NODE)))
        standin.put_claim({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                           "metadata": {"name": "vm", "namespace": "vms", "uid": "uid-bench"},
                           "status": {"allocation": {"devices": {"results": [
                               {"request": "kvm", "driver": DRIVER, "pool": NODE, "device": "kvm", "shareID": "1"}]}}}})
        for _ in range(20):  # warm the channel and the client's pool
            kubelet.prepare(DRIVER, [("vms", "uid-bench", "vm")])
        for _ in range(rounds):
            began = time.perf_counter()
            answer = kubelet.prepare(DRIVER, [("vms", "uid-bench", "vm")])
            out["prepare"].append(time.perf_counter() - began)
            assert answer["uid-bench"].error == ""
            began = time.perf_counter()
            api.read_claim("vms", "vm")
            out["floor"].append(time.perf_counter() - began)
        for _ in range(5):
            generation = standin.pool(NODE)[0]["spec"]["pool"]["generation"]
            began = time.monotonic()
            if node.exists():
                node.unlink()
            else:
                node.write_text("")
            wait(lambda g=generation: standin.pool(NODE)[0]["spec"]["pool"]["generation"] == g + 1)
            out["generation"].append(time.monotonic() - began)
    finally:
        driver.stop()
        kubelet.close()
        standin.stop()
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    registered, published = bench_start(args.starts)
    figures = bench_prepare_and_generation(args.rounds)
    ms = 1000.0
    print(f"load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)\n")
    print("| measure | p50 | p99 / max | n |")
    print("|---|---|---|---|")
    print(f"| start -> registered with the kubelet (process) | {statistics.median(registered) * ms:.0f} ms | "
          f"{max(registered) * ms:.0f} ms | {len(registered)} |")
    print(f"| start -> slices published (process) | {statistics.median(published) * ms:.0f} ms | "
          f"{max(published) * ms:.0f} ms | {len(published)} |")
    for key, label in (("prepare", "NodePrepareResources, 1 claim (v1, over the socket)"),
                       ("floor", "floor: GET of the claim from the stand-in, same client")):
        samples = figures[key]
        print(f"| {label} | {percentile(samples, 0.5) * ms:.2f} ms | {percentile(samples, 0.99) * ms:.2f} ms | "
              f"{len(samples)} |")
    generation = figures["generation"]
    print(f"| device node gone/back -> new pool generation | {statistics.median(generation) * ms:.0f} ms | "
          f"{max(generation) * ms:.0f} ms | {len(generation)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
