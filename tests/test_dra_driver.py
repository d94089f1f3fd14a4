"""The DRA driver against a kubelet DRA emulator (tests/dra_kubelet_emulator.py, the real
protos and the kubelet's rules) and an API stand-in applying resource.k8s.io's rules
(tests/dra_apiserver_standin.py). The probe is the real one on this machine's /dev/kvm
and libvirt; expected values never come from the driver's code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from dra_apiserver_standin import DraApiServerStandin
from dra_kubelet_emulator import DraKubelet

from kvminfo_dra.apiserver import ResourceApi
from kvminfo_dra.driver import Driver, DriverConfig, uninstall
from kvminfo_dra.main import build_parser
from kvminfo_dra.upstream import KvminfoError, load_api_client

DRIVER = "kvm.kvminfo.io"  # the name deploy/dra's DeviceClasses select (device.driver)
NODE = "node-a"
CDI_KIND = "kvm.kvminfo.io/device"

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm on this machine")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """Socket paths must stay within 107 characters: pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="dra-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[DraApiServerStandin]:
    server = DraApiServerStandin().start()
    yield server
    server.stop()


@pytest.fixture
def kubelet(short_tmp: Path, standin: DraApiServerStandin) -> Iterator[DraKubelet]:
    emulator = DraKubelet(short_tmp / "kubelet", wipe=lambda driver: standin.wipe(NODE, driver), wiping_delay_s=1.0)
    yield emulator
    emulator.close()


def _config(kubelet: DraKubelet, tmp_path: Path, **changes: object) -> DriverConfig:
    base = DriverConfig(node=NODE, kubelet_root=kubelet.root, cdi_dir=tmp_path / "cdi", others={},
                        probe_interval_s=3600, health_interval_s=0.1, retry_s=0.1)
    return replace(base, **changes)  # type: ignore[arg-type]


def _api(standin: DraApiServerStandin, tmp_path: Path) -> ResourceApi:
    return ResourceApi(load_api_client(str(standin.write_kubeconfig(tmp_path / "kubeconfig"))))


def _wait(predicate, timeout: float = 10.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _claim(uid: str, name: str, results: list[dict[str, object]], namespace: str = "vms") -> dict[str, object]:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "status": {"allocation": {"devices": {"results": results}}}}


def _kvm_result(device: str = "kvm", share: str | None = "5f0c") -> dict[str, object]:
    result: dict[str, object] = {"request": "kvm", "driver": DRIVER, "pool": NODE, "device": device}
    if share:
        result["shareID"] = share
    return result


def _block(spec: Path, tmp_path: Path) -> None:
    """A directory in the spec's place: it cannot be written (the driver rewrites a removed file at once)."""
    for _ in range(1000):
        (tmp_path / "in-the-way").mkdir(exist_ok=True)
        spec.unlink(missing_ok=True)
        try:
            os.rename(tmp_path / "in-the-way", spec)
            break
        except OSError:
            continue
    assert spec.is_dir()


@pytest.fixture
def running(tmp_path: Path, standin: DraApiServerStandin, kubelet: DraKubelet) -> Iterator[Driver]:
    driver = Driver(_config(kubelet, tmp_path), _api(standin, tmp_path)).start()
    kubelet.wait_registered(DRIVER)
    _wait(lambda: standin.pool(NODE), what="slices")
    yield driver
    driver.stop()


def test_registers_as_a_dra_plugin_with_v1_chosen(running: Driver, kubelet: DraKubelet, tmp_path: Path) -> None:
    plugin = kubelet.plugin(DRIVER)
    assert plugin.service == "v1.DRAPlugin"  # the kubelet takes the first it knows: ours lists v1 first
    assert plugin.endpoint == str(kubelet.root / "plugins" / DRIVER / "dra.sock")
    assert not kubelet.refused
    assert running.wait_registered(5)  # NotifyRegistrationStatus(plugin_registered=True) arrived


def test_publishes_one_shared_kvm_device(running: Driver, standin: DraApiServerStandin) -> None:
    (slice_,) = standin.pool(NODE)
    spec = slice_["spec"]
    assert spec["driver"] == DRIVER and spec["nodeName"] == NODE
    assert spec["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    (device,) = spec["devices"]
    assert device["name"] == "kvm" and device["allowMultipleAllocations"] is True
    attributes = device["attributes"]
    assert attributes["type"] == {"string": "kvm"}
    # KVM_GET_API_VERSION is 12 on every Linux since 2.6.22 (Documentation/virt/kvm/api.rst 4.1)
    assert attributes["kvmApiVersion"] == {"int": 12}
    assert attributes["arch"] == {"string": os.uname().machine}


def test_prepare_answers_cdi_ids_and_share_id_v1_and_v1beta1(running: Driver, standin: DraApiServerStandin,
                                                             kubelet: DraKubelet, tmp_path: Path) -> None:
    standin.put_claim(_claim("uid-1", "vm-1", [_kvm_result()]))
    answer = kubelet.prepare(DRIVER, [("vms", "uid-1", "vm-1")])["uid-1"]
    assert answer.error == ""
    (device,) = answer.devices
    assert (list(device.request_names), device.pool_name, device.device_name) == (["kvm"], NODE, "kvm")
    assert list(device.cdi_device_ids) == [f"{CDI_KIND}=kvm"]
    assert device.share_id == "5f0c"
    old = kubelet.prepare(DRIVER, [("vms", "uid-1", "vm-1")], service="v1beta1.DRAPlugin")["uid-1"]
    assert [list(d.cdi_device_ids) for d in old.devices] == [[f"{CDI_KIND}=kvm"]]
    # the CDI spec those IDs name exists and injects /dev/kvm
    spec = json.loads((tmp_path / "cdi" / "kvm.kvminfo.io-device.json").read_text())
    assert spec["kind"] == CDI_KIND
    assert [(d["name"], [n["path"] for n in d["containerEdits"]["deviceNodes"]]) for d in spec["devices"]] == \
        [("kvm", ["/dev/kvm"])]
    assert kubelet.unprepare(DRIVER, [("vms", "uid-1", "vm-1")])["uid-1"].error == ""


def test_prepare_is_idempotent_across_driver_and_kubelet_restarts(tmp_path: Path, standin: DraApiServerStandin,
                                                                  kubelet: DraKubelet) -> None:
    standin.put_claim(_claim("uid-2", "vm-2", [_kvm_result()]))
    driver = Driver(_config(kubelet, tmp_path), _api(standin, tmp_path)).start()
    kubelet.wait_registered(DRIVER)
    first = kubelet.prepare(DRIVER, [("vms", "uid-2", "vm-2")])["uid-2"]
    driver.stop()
    _wait(lambda: not kubelet.plugins, what="deregistration after the registration socket went")
    driver = Driver(_config(kubelet, tmp_path), _api(standin, tmp_path)).start()
    kubelet.wait_registered(DRIVER)
    again = kubelet.prepare(DRIVER, [("vms", "uid-2", "vm-2")])["uid-2"]
    kubelet.restart()  # it wipes the node's slices; the driver publishes them again on registration
    kubelet.wait_registered(DRIVER)
    third = kubelet.prepare(DRIVER, [("vms", "uid-2", "vm-2")])["uid-2"]
    _wait(lambda: standin.pool(NODE), what="slices after the kubelet's restart")
    assert first.SerializeToString(deterministic=True) == again.SerializeToString(deterministic=True) \
        == third.SerializeToString(deterministic=True)
    assert len(standin.pool(NODE)) == 1 and standin.pool(NODE)[0]["spec"]["pool"]["generation"] == 1
    driver.stop()


def test_bad_claims_are_one_line_errors_and_nothing_half(running: Driver, standin: DraApiServerStandin,
                                                         kubelet: DraKubelet) -> None:
    standin.put_claim(_claim("uid-3", "other-node", [_kvm_result(), {**_kvm_result(), "pool": "node-b"}]))
    standin.put_claim(_claim("uid-4", "not-ours", [{"request": "gpu", "driver": "gpu.example.com", "pool": NODE,
                                                    "device": "gpu-0"}]))
    answers = kubelet.prepare(DRIVER, [("vms", "uid-3", "other-node"), ("vms", "uid-4", "not-ours"),
                                       ("vms", "uid-5", "unknown"), ("vms", "uid-6", "recreated")])
    assert not answers["uid-3"].devices and "node-b/kvm is not on this node" in answers["uid-3"].error
    assert "allocates no device of driver kvm.kvminfo.io" in answers["uid-4"].error
    assert "404" in answers["uid-5"].error and "vms/unknown" in answers["uid-5"].error
    for answer in answers.values():
        assert answer.error and "\n" not in answer.error and not answer.devices
    standin.down = True
    down = kubelet.prepare(DRIVER, [("vms", "uid-3", "other-node")])["uid-3"]
    assert "503" in down.error and "\n" not in down.error


def test_claim_of_another_uid_is_refused(running: Driver, standin: DraApiServerStandin, kubelet: DraKubelet) -> None:
    standin.put_claim(_claim("uid-new", "vm-7", [_kvm_result()]))
    answer = kubelet.prepare(DRIVER, [("vms", "uid-old", "vm-7")])["uid-old"]
    assert "has uid uid-new, the kubelet asked for uid-old" in answer.error and not answer.devices


def test_health_stream_reports_the_kvm_device(running: Driver, kubelet: DraKubelet) -> None:
    plugin = kubelet.plugin(DRIVER)
    _wait(lambda: plugin.health, what="a NodeWatchResources answer")
    (device,) = plugin.health[-1].devices
    assert (device.device.pool_name, device.device.device_name, device.health) == (NODE, "kvm", 1)  # HEALTHY = 1


def test_rolling_update_two_instances(tmp_path: Path, standin: DraApiServerStandin, kubelet: DraKubelet) -> None:
    standin.put_claim(_claim("uid-8", "vm-8", [_kvm_result()]))
    old = Driver(_config(kubelet, tmp_path, instance="pod-old"), _api(standin, tmp_path)).start()
    kubelet.wait_registered(DRIVER)
    new = Driver(_config(kubelet, tmp_path, instance="pod-new"), _api(standin, tmp_path)).start()
    both = kubelet.wait_registered(DRIVER, count=2)
    assert len({p.endpoint for p in both}) == 2 and not kubelet.refused
    assert kubelet.plugin(DRIVER).endpoint.endswith("dra-pod-new.sock")
    assert kubelet.prepare(DRIVER, [("vms", "uid-8", "vm-8")])["uid-8"].error == ""
    old.stop()
    _wait(lambda: len(kubelet.plugins) == 1, what="the old instance deregistered")
    assert kubelet.prepare(DRIVER, [("vms", "uid-8", "vm-8")])["uid-8"].error == ""
    assert [s["spec"]["pool"]["generation"] for s in standin.pool(NODE)] == [1]
    new.stop()


def test_facts_change_is_a_new_generation(tmp_path: Path, standin: DraApiServerStandin, kubelet: DraKubelet) -> None:
    tun = tmp_path / "tun-node"
    tun.write_text("")  # stands for a device node that appears (existence is all the driver checks)
    driver = Driver(_config(kubelet, tmp_path, others={"tun": ("tun", str(tun))}), _api(standin, tmp_path)).start()
    kubelet.wait_registered(DRIVER)
    _wait(lambda: standin.pool(NODE), what="slices")
    assert [d["name"] for d in standin.pool(NODE)[0]["spec"]["devices"]] == ["kvm", "tun"]
    tun.unlink()
    _wait(lambda: standin.pool(NODE)[0]["spec"]["pool"]["generation"] == 2, what="generation 2")
    assert [d["name"] for d in standin.pool(NODE)[0]["spec"]["devices"]] == ["kvm"]
    driver.stop()


def test_kubelet_restart_wipe_is_republished(running: Driver, standin: DraApiServerStandin, kubelet: DraKubelet) -> None:
    """The kubelet deletes the node's slices at its start; the driver publishes again when registered again."""
    kubelet.restart()
    kubelet.wait_registered(DRIVER)
    _wait(lambda: standin.pool(NODE), what="republished slices")


def test_slices_outlive_a_quick_restart_and_go_after_the_wiping_delay(tmp_path: Path, standin: DraApiServerStandin,
                                                                      kubelet: DraKubelet) -> None:
    driver = Driver(_config(kubelet, tmp_path), _api(standin, tmp_path)).start()
    kubelet.wait_registered(DRIVER)
    _wait(lambda: standin.pool(NODE), what="slices")
    driver.stop()
    driver = Driver(_config(kubelet, tmp_path), _api(standin, tmp_path)).start()  # back within the delay
    kubelet.wait_registered(DRIVER)
    time.sleep(kubelet.wiping_delay_s + 0.5)
    assert standin.pool(NODE), "a driver back within the wiping delay keeps its slices"
    driver.stop()
    _wait(lambda: not standin.pool(NODE), what="the kubelet's wipe after the last plugin went")


def test_cdi_spec_that_cannot_be_written_is_unhealthy_and_refuses_prepare(running: Driver, standin: DraApiServerStandin,
                                                                          kubelet: DraKubelet, tmp_path: Path) -> None:
    spec = tmp_path / "cdi" / "kvm.kvminfo.io-device.json"
    _block(spec, tmp_path)
    plugin = kubelet.plugin(DRIVER)
    _wait(lambda: plugin.health and plugin.health[-1].devices[0].health == 2, what="UNHEALTHY")  # UNHEALTHY = 2
    assert str(spec) in plugin.health[-1].devices[0].message
    standin.put_claim(_claim("uid-10", "vm-10", [_kvm_result()]))
    answer = kubelet.prepare(DRIVER, [("vms", "uid-10", "vm-10")])["uid-10"]
    assert "CDI spec is not written" in answer.error and not answer.devices
    spec.rmdir()
    _wait(lambda: plugin.health[-1].devices[0].health == 1, what="HEALTHY again once the spec is back")
    assert kubelet.prepare(DRIVER, [("vms", "uid-10", "vm-10")])["uid-10"].error == ""


def test_exclusive_fallback_devices(tmp_path: Path, standin: DraApiServerStandin, kubelet: DraKubelet) -> None:
    driver = Driver(_config(kubelet, tmp_path, exclusive=3), _api(standin, tmp_path)).start()
    _wait(lambda: standin.pool(NODE), what="slices")
    devices = standin.pool(NODE)[0]["spec"]["devices"]
    assert [d["name"] for d in devices] == ["kvm-0", "kvm-1", "kvm-2"]
    assert not any(d.get("allowMultipleAllocations") for d in devices)
    kubelet.wait_registered(DRIVER)
    standin.put_claim(_claim("uid-9", "vm-9", [_kvm_result("kvm-2", share=None)]))
    (device,) = kubelet.prepare(DRIVER, [("vms", "uid-9", "vm-9")])["uid-9"].devices
    assert device.device_name == "kvm-2" and list(device.cdi_device_ids) == [f"{CDI_KIND}=kvm"]
    assert not device.HasField("share_id")
    driver.stop()


@pytest.mark.parametrize("served", [("v1beta2",), ("v1beta1",)])
def test_older_api_servers_by_discovery(tmp_path: Path, kubelet: DraKubelet, served: tuple[str, ...],
                                        caplog: pytest.LogCaptureFixture) -> None:
    """1.33 serves v1beta2, 1.32 v1beta1: neither has allowMultipleAllocations, so the shared device
    is refused in one line, and the exclusive fallback is published in that version's shape."""
    standin = DraApiServerStandin(served=served).start()
    try:
        shared = Driver(_config(kubelet, tmp_path), _api(standin, tmp_path)).start()
        _wait(lambda: "has no shared devices" in caplog.text, what="the one-line refusal")
        assert not standin.pool(NODE)
        shared.stop()
        driver = Driver(_config(kubelet, tmp_path, exclusive=2), _api(standin, tmp_path)).start()
        _wait(lambda: standin.pool(NODE), what="slices")
        assert driver.api.version == served[0]
        devices = standin.pool(NODE)[0]["spec"]["devices"]
        assert [d["name"] for d in devices] == ["kvm-0", "kvm-1"]
        assert devices[0]["attributes"]["kvmApiVersion"] == {"int": 12}
        driver.stop()
    finally:
        standin.stop()


def test_consumable_capacity_off_is_said(tmp_path: Path, kubelet: DraKubelet, caplog: pytest.LogCaptureFixture) -> None:
    """1.34/1.35 with DRAConsumableCapacity off drop allowMultipleAllocations silently: the driver says so."""
    standin = DraApiServerStandin(consumable_capacity=False).start()
    try:
        driver = Driver(_config(kubelet, tmp_path), _api(standin, tmp_path)).start()
        _wait(lambda: standin.pool(NODE), what="slices")
        _wait(lambda: "dropped allowMultipleAllocations from kvm" in caplog.text, what="the warning")
        driver.stop()
    finally:
        standin.stop()


def test_uninstall_removes_slices_and_spec(running: Driver, standin: DraApiServerStandin, kubelet: DraKubelet,
                                          tmp_path: Path) -> None:
    running.stop()
    lines = uninstall(_config(kubelet, tmp_path), _api(standin, tmp_path))
    assert not standin.pool(NODE)
    assert not (tmp_path / "cdi" / "kvm.kvminfo.io-device.json").exists()
    assert lines[0] == f"deleted 1 ResourceSlice(s) of {DRIVER} on node {NODE}"


def test_command_starts_registers_and_stops_on_sigterm(tmp_path: Path, standin: DraApiServerStandin,
                                                       kubelet: DraKubelet) -> None:
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
    process = subprocess.Popen([sys.executable, "-m", "kvminfo", "dra-driver", "--node-name", NODE,
                                "--kubelet-root", str(kubelet.root), "--cdi-dir", str(tmp_path / "cdi"),
                                "--kubeconfig", str(kubeconfig)], stderr=subprocess.PIPE, text=True)
    try:
        kubelet.wait_registered(DRIVER, timeout=30)
        _wait(lambda: standin.pool(NODE), timeout=30, what="slices")
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert not (kubelet.root / "plugins_registry" / f"{DRIVER}-reg.sock").exists()
    assert standin.pool(NODE)  # slices stay for the next instance (or the kubelet's wipe)
    assert "Traceback" not in err


def test_command_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "kvminfo", "dra-driver", "--node-name", "Not_A_Node",
                          "--kubeconfig", str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1 and "--node-name" in run.stderr


def test_command_without_a_node_name_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    run = subprocess.run([sys.executable, "-m", "kvminfo", "dra-driver", "--kubeconfig", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode != 0 and run.stderr.count("\n") == 1, run.stderr
    assert "--node-name not given and $NODE_NAME not set" in run.stderr and "None" not in run.stderr


def test_probe_interval_is_a_duration_as_elsewhere(tmp_path: Path) -> None:
    from kvminfo_dra.main import build_parser

    parser = build_parser("kvminfo dra-driver")
    assert parser.parse_args(["--probe-interval", "1m30s"]).probe_interval == 90
    assert parser.parse_args(["--probe-interval", "45"]).probe_interval == 45
    for bad in ("0.5", "1x", "2d"):  # too short, not a duration, past the one-day bound
        run = subprocess.run([sys.executable, "-m", "kvminfo", "dra-driver", "--node-name", NODE, "--probe-interval", bad],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--probe-interval" in run.stderr, (bad, run.stderr)


def test_command_version_names_the_build() -> None:
    run = subprocess.run([sys.executable, "-m", "kvminfo", "dra-driver", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("kvminfo dra-driver ") and "(commit " in run.stdout, run.stdout
@pytest.mark.parametrize(("text", "seconds"), [("60", 60.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0),
                                               ("2.5", 2.5), ("1d", 86400.0)])
def test_probe_interval_takes_every_time_options_syntax(text: str, seconds: float) -> None:
    # docs/cli.md "Durations and bounds": a bare number is seconds, or units d, h, m, s.
    assert build_parser("kvminfo dra-driver").parse_args(["--probe-interval", text]).probe_interval == seconds


@pytest.mark.parametrize("text", ["0", "-1", "1x", "", "1d1s"])
def test_a_bad_probe_interval_is_a_usage_error(text: str) -> None:
    run = subprocess.run([sys.executable, "-m", "kvminfo", "dra-driver", "--node-name", NODE, "--probe-interval",
                          text], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "--probe-interval" in run.stderr and "Traceback" not in run.stderr


def test_a_slice_deleted_by_someone_else_comes_back(tmp_path: Path, standin: DraApiServerStandin,
                                                    kubelet: DraKubelet) -> None:
    driver = Driver(_config(kubelet, tmp_path, probe_interval_s=0.3), _api(standin, tmp_path)).start()
    _wait(lambda: standin.pool(NODE), what="slices")
    standin.wipe(NODE)
    _wait(lambda: standin.pool(NODE), what="the slice written back within the probe interval")
    assert standin.pool(NODE)[0]["spec"]["pool"]["generation"] == 1  # the same content: the same generation
    driver.stop()


def test_a_refused_registration_exits_non_zero_in_one_line(tmp_path: Path, short_tmp: Path,
                                                           standin: DraApiServerStandin) -> None:
    """A kubelet that knows none of our services (validateSupportedServices) refuses us."""
    picky = DraKubelet(short_tmp / "picky", services=("v2.DRAPlugin",))
    try:
        run = subprocess.run([sys.executable, "-m", "kvminfo", "dra-driver", "--node-name", NODE,
                              "--kubelet-root", str(picky.root), "--cdi-dir", str(tmp_path / "cdi"),
                              "--kubeconfig", str(standin.write_kubeconfig(tmp_path / "kubeconfig"))],
                             capture_output=True, text=True, timeout=60)
    finally:
        picky.close()
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("kvminfo dra-driver: the kubelet refused the registration: RegisterPlugin error -- plugin "
                           "validation failed with err: invalid supported gRPC versions of DRA driver plugin kvm.kvminfo.io")
    assert "Traceback" not in run.stderr


def test_a_kubelet_of_1_32_chooses_v1beta1(tmp_path: Path, short_tmp: Path, standin: DraApiServerStandin) -> None:
    """A 1.32/1.33 kubelet knows only v1beta1.DRAPlugin: it picks that, and v1beta1 has no share ID."""
    old = DraKubelet(short_tmp / "old", services=("v1beta1.DRAPlugin",))
    driver = Driver(_config(old, tmp_path), _api(standin, tmp_path)).start()
    try:
        (plugin,) = old.wait_registered(DRIVER)
        assert plugin.service == "v1beta1.DRAPlugin"
        standin.put_claim(_claim("uid-11", "vm-11", [_kvm_result()]))
        (device,) = old.prepare(DRIVER, [("vms", "uid-11", "vm-11")])["uid-11"].devices
        assert list(device.cdi_device_ids) == [f"{CDI_KIND}=kvm"] and device.device_name == "kvm"
    finally:
        driver.stop()
        old.close()


def test_command_uninstall(tmp_path: Path, running: Driver, standin: DraApiServerStandin, kubelet: DraKubelet) -> None:
    kubelet.wiping_delay_s = 600  # uninstall before the kubelet's own wipe
    running.stop()
    run = subprocess.run([sys.executable, "-m", "kvminfo", "dra-driver", "--node-name", NODE, "--uninstall",
                          "--cdi-dir", str(tmp_path / "cdi"),
                          "--kubeconfig", str(standin.write_kubeconfig(tmp_path / "kubeconfig"))],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"deleted 1 ResourceSlice(s) of {DRIVER} on node {NODE}",
                                       f"{tmp_path / 'cdi' / 'kvm.kvminfo.io-device.json'}: removed"]
    assert not standin.pool(NODE)


def test_cdi_dir_unusable_at_start_is_one_line(tmp_path: Path, standin: DraApiServerStandin, kubelet: DraKubelet) -> None:
    (tmp_path / "cdi").write_text("a file where the CDI directory should be")
    with pytest.raises(KvminfoError) as raised:
        Driver(_config(kubelet, tmp_path), _api(standin, tmp_path)).start()
    assert "CDI spec" in str(raised.value) and "\n" not in str(raised.value)


def test_spec_unwritable_when_the_devices_change_is_retried(tmp_path: Path, standin: DraApiServerStandin,
                                                            kubelet: DraKubelet) -> None:
    tun = tmp_path / "tun-node"
    tun.write_text("")
    driver = Driver(_config(kubelet, tmp_path, others={"tun": ("tun", str(tun))}), _api(standin, tmp_path)).start()
    plugin = kubelet.wait_registered(DRIVER)[0]
    spec = tmp_path / "cdi" / "kvm.kvminfo.io-device.json"
    _block(spec, tmp_path)
    _wait(lambda: plugin.health and plugin.health[-1].devices[0].health == 2, what="UNHEALTHY")
    tun.unlink()  # the devices change: a new spec must be written, and cannot be yet
    _wait(lambda: [d["name"] for d in standin.pool(NODE)[0]["spec"]["devices"]] == ["kvm"], what="generation 2")
    assert spec.is_dir() and plugin.health[-1].devices[0].health == 2
    spec.rmdir()
    _wait(lambda: plugin.health[-1].devices[0].health == 1 and spec.is_file(), what="the spec written on retry")
    assert [d["name"] for d in json.loads(spec.read_text())["devices"]] == ["kvm"]
    driver.stop()


def test_dead_sockets_of_earlier_instances_are_removed_live_ones_kept(tmp_path: Path, standin: DraApiServerStandin,
                                                                      kubelet: DraKubelet) -> None:
    import socket

    live = Driver(_config(kubelet, tmp_path, instance="live"), _api(standin, tmp_path)).start()
    dead = kubelet.root / "plugins_registry" / f"{DRIVER}-dead-reg.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(dead))
    listener.close()  # bound, never served: connect() is refused, as for a killed pod's socket
    new = Driver(_config(kubelet, tmp_path, instance="new"), _api(standin, tmp_path)).start()
    try:
        assert not dead.exists()
        assert live.config.registration_socket.exists() and live.config.dra_socket.exists()
        kubelet.wait_registered(DRIVER, count=2)
    finally:
        new.stop()
        live.stop()
