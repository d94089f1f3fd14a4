"""The device plugin against the kubelet emulator, over real unix sockets and gRPC.

Device nodes are real: /dev/kvm for the default resource, and character
devices made with mknod in a temp dir where a test must remove and restore one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import threading
import time
from pathlib import Path

import cdi_rules
import grpc
import pytest
from kubelet_emulator import kubelet_refusal
from plugin_harness import TEST_RESOURCE, device_settings, free_port, http_get, kubelet, make_char_device, running_plugin

from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api
from kvminfo_plugin.kubelet.v1beta1 import api_pb2_grpc as api_grpc


def test_registration_and_options(plugin_dir: Path, device: Path) -> None:
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        endpoint = k.wait_registered(TEST_RESOURCE)
        _, request = k.registrations[0]
        assert request.version == "v1beta1"
        assert request.endpoint == "kvminfo-test.kvminfo.io_node.sock"  # relative to the plugin dir
        assert request.options.get_preferred_allocation_available and not request.options.pre_start_required
        assert endpoint.options == request.options  # GetDevicePluginOptions agrees with Register
        socket_mode = os.stat(plugin_dir / request.endpoint).st_mode
        assert stat.S_ISSOCK(socket_mode) and stat.S_IMODE(socket_mode) == 0o600
        assert k.refusals == []


def test_list_and_watch_sends_full_list(plugin_dir: Path, device: Path) -> None:
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device, slots=12)):
        k.wait_registered(TEST_RESOURCE)
        devices = k.latest(TEST_RESOURCE)
        prefixes = {i.rsplit("-", 1)[0] for i in devices}
        assert len(prefixes) == 1 and prefixes.pop().endswith("-dev-testdev")  # readable: names the node
        assert sorted(i.rsplit("-", 1)[1] for i in devices) == [f"{n:02d}" for n in range(12)]
        assert set(devices.values()) == {"Healthy"}
        assert all(len(i) <= 63 and re.fullmatch(r"[A-Za-z0-9-]+", i) for i in devices)


def test_allocate_valid_ids(plugin_dir: Path, device: Path) -> None:
    settings = device_settings(plugin_dir, device, permissions="r",
                               mounts=[{"hostPath": "/usr/share/zoneinfo", "containerPath": "/zoneinfo"}],
                               envs={"KVMINFO_DEVICE": "yes"})
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        container = k.admit(TEST_RESOURCE, 2)
        # two slots of one node are one device in the container
        assert [(d.host_path, d.container_path, d.permissions) for d in container.devices] == [(str(device), str(device), "r")]
        assert [(m.host_path, m.container_path, m.read_only) for m in container.mounts] == [("/usr/share/zoneinfo", "/zoneinfo", True)]
        assert dict(container.envs) == {"KVMINFO_DEVICE": "yes"}
        assert len(container.cdi_devices) == 0


def test_allocate_unknown_id_is_invalid_argument(plugin_dir: Path, device: Path) -> None:
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        k.wait_registered(TEST_RESOURCE)
        known = sorted(k.latest(TEST_RESOURCE))[0]
        with pytest.raises(grpc.RpcError) as caught:
            k.stub(TEST_RESOURCE).Allocate(api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=[known]),
                api.ContainerAllocateRequest(devices_ids=["no-such-slot"])]), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'no-such-slot'" in caught.value.details() and TEST_RESOURCE in caught.value.details()


def test_preferred_allocation_honours_must_include(plugin_dir: Path, device: Path) -> None:
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device, slots=8)):
        k.wait_registered(TEST_RESOURCE)
        ids = sorted(k.latest(TEST_RESOURCE))
        response = k.stub(TEST_RESOURCE).GetPreferredAllocation(api.PreferredAllocationRequest(container_requests=[
            api.ContainerPreferredAllocationRequest(available_deviceIDs=ids[2:], must_include_deviceIDs=[ids[6]],
                                                    allocation_size=3),
            api.ContainerPreferredAllocationRequest(available_deviceIDs=ids, allocation_size=2)]), timeout=5)
        first, second = (list(r.deviceIDs) for r in response.container_responses)
        assert first[0] == ids[6] and len(first) == 3 and set(first) <= set(ids[2:])
        assert len(set(first)) == 3
        assert second == ids[:2]
        with pytest.raises(grpc.RpcError) as caught:
            k.stub(TEST_RESOURCE).GetPreferredAllocation(api.PreferredAllocationRequest(container_requests=[
                api.ContainerPreferredAllocationRequest(available_deviceIDs=["bogus"], allocation_size=1)]), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'bogus'" in caught.value.details()


def test_health_flap_with_a_real_char_device(plugin_dir: Path, device: Path) -> None:
    # The poll is 60 s here: only inotify can deliver the change in time.
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        k.wait_registered(TEST_RESOURCE)
        removed = time.monotonic()
        device.unlink()
        k.wait_health(TEST_RESOURCE, lambda d: set(d.values()) == {"Unhealthy"}, timeout_s=1.0)
        assert time.monotonic() - removed < 1.0
        with pytest.raises(grpc.RpcError) as caught:  # no Allocate on a node that is gone
            k.stub(TEST_RESOURCE).Allocate(api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=[sorted(k.latest(TEST_RESOURCE))[0]])]), timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        make_char_device(device)
        devices = k.wait_health(TEST_RESOURCE, lambda d: set(d.values()) == {"Healthy"}, timeout_s=1.0)
        assert len(devices) == 4


def test_a_node_that_is_not_a_char_device_or_has_no_driver_is_unhealthy(plugin_dir: Path, tmp_path: Path) -> None:
    plain_file = tmp_path / "not-a-device"
    plain_file.write_text("")
    no_driver = make_char_device(tmp_path / "no-driver", os.makedev(240, 77))  # 240: local/experimental, unused here
    settings = {"pluginDir": str(plugin_dir), "resources": [
        {"name": "test.kvminfo.io/plain", "devices": [str(plain_file)], "slots": 1},
        {"name": "test.kvminfo.io/nodriver", "devices": [str(no_driver)], "slots": 1}]}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        for resource in ("test.kvminfo.io/plain", "test.kvminfo.io/nodriver"):
            k.wait_registered(resource)
            assert set(k.latest(resource).values()) == {"Unhealthy"}


def test_poll_finds_a_device_whose_directory_appears_later(plugin_dir: Path, tmp_path: Path) -> None:
    later = tmp_path / "later"
    settings = device_settings(plugin_dir, later / "dev")
    settings["pollIntervalSeconds"] = 0.2  # no directory to watch: the poll must find it
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        assert set(k.latest(TEST_RESOURCE).values()) == {"Unhealthy"}
        later.mkdir()
        make_char_device(later / "dev")
        k.wait_health(TEST_RESOURCE, lambda d: set(d.values()) == {"Healthy"}, timeout_s=2.0)


def test_kubelet_restart_serves_and_registers_again(plugin_dir: Path, device: Path) -> None:
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        k.wait_registered(TEST_RESOURCE)
        for round_number in range(2, 5):
            restarted = time.monotonic()
            k.restart()  # every socket deleted, including ours; a new kubelet.sock
            endpoint = k.wait_registered(TEST_RESOURCE, count=round_number, timeout_s=1.0)
            assert endpoint.registered_at - restarted < 1.0
            assert k.admit(TEST_RESOURCE, 1).devices[0].host_path == str(device)
        time.sleep(0.5)  # and no registration storm afterwards
        assert len(k.registrations) == 4


def test_kubelet_absent_at_start_then_appearing(plugin_dir: Path, device: Path) -> None:
    port = free_port()
    settings = {**device_settings(plugin_dir, device), "metricsPort": port, "metricsAddress": "127.0.0.1"}
    with running_plugin(settings) as runtime:
        time.sleep(1.0)
        failed = runtime.metrics.registry.get_sample_value("kvminfo_plugin_registrations_total",
                                                           {"resource": TEST_RESOURCE, "result": "failed"})
        assert 2 <= failed <= 6  # retried with backoff (0.1, 0.2, 0.4 ...), not spinning
        status, body = http_get(port, "/healthz")
        assert status == 503 and "no kubelet socket" in body
        with kubelet(plugin_dir) as k:
            appeared = time.monotonic()
            endpoint = k.wait_registered(TEST_RESOURCE, timeout_s=1.0)
            assert endpoint.registered_at - appeared < 1.0
            status, body = http_get(port, "/healthz")
            assert status == 200 and body.startswith("ok")


def test_kubelet_ending_the_stream_gets_a_new_registration(plugin_dir: Path, device: Path) -> None:
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        k.wait_registered(TEST_RESOURCE)
        k.end_stream(TEST_RESOURCE)
        k.wait_registered(TEST_RESOURCE, count=2, timeout_s=1.0)
        time.sleep(0.6)  # a re-registration drops the old stream; that must not loop
        assert len(k.registrations) == 2


def test_cdi_mode(plugin_dir: Path, device: Path, tmp_path: Path) -> None:
    cdi_dir = tmp_path / "cdi"
    cdi_dir.mkdir()
    settings = {**device_settings(plugin_dir, device, cdi=True, envs={"A": "1"},
                                  mounts=[{"hostPath": "/etc/hostname", "containerPath": "/host-name"}]),
                "cdiDir": str(cdi_dir)}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        spec_file = cdi_dir / "test.kvminfo.io-node.json"
        spec = json.loads(spec_file.read_text())
        assert cdi_rules.problems(spec) == [] and cdi_rules.host_node_problems(spec) == []
        assert spec["cdiVersion"] == cdi_rules.minimum_version(spec) and spec["kind"] == TEST_RESOURCE
        [cdi_device] = spec["devices"]
        # 0666 in the container whatever the host's mode (cdiFileMode's default): any uid of the pod opens it
        assert cdi_device["containerEdits"]["deviceNodes"] == [{"path": str(device), "fileMode": 0o666,
                                                                "permissions": "rw"}]
        assert spec["containerEdits"] == {"env": ["A=1"], "mounts": [
            {"hostPath": "/etc/hostname", "containerPath": "/host-name", "options": ["ro", "bind"]}]}
        assert [p.name for p in cdi_dir.iterdir()] == [spec_file.name]  # no temp file left
        container = k.admit(TEST_RESOURCE, 1)
        assert [c.name for c in container.cdi_devices] == [f"{TEST_RESOURCE}={cdi_device['name']}"]
        assert re.fullmatch(r"[a-z0-9.-]+/[a-z0-9.-]+=[A-Za-z0-9_.:-]+", container.cdi_devices[0].name)


def test_cdi_allocate_also_sends_device_specs(plugin_dir: Path, device: Path, tmp_path: Path) -> None:
    """Issue 10 case 11: on a runtime without CDI (containerd 1.6, or 1.7 with enable_cdi = false) the
    CDI names are dropped silently; the DeviceSpecs, mounts and env still give the container its
    device. A CDI runtime replaces each by the spec's entry of the same container path."""
    settings = {**device_settings(plugin_dir, device, cdi=True, envs={"A": "1"},
                                  mounts=[{"hostPath": "/etc/hostname", "containerPath": "/host-name"}]),
                "cdiDir": str(tmp_path / "cdi")}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        container = k.admit(TEST_RESOURCE, 1)
        assert len(container.cdi_devices) == 1
        assert [(d.host_path, d.container_path, d.permissions) for d in container.devices] == [(str(device), str(device), "rw")]
        assert dict(container.envs) == {"A": "1"}
        assert [(m.host_path, m.container_path, m.read_only) for m in container.mounts] == [("/etc/hostname", "/host-name", True)]


def test_metrics_endpoint(plugin_dir: Path, device: Path) -> None:
    port = free_port()
    settings = {**device_settings(plugin_dir, device), "metricsPort": port, "metricsAddress": "127.0.0.1"}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        k.admit(TEST_RESOURCE, 1)
        k.admit(TEST_RESOURCE, 1)
        status, text = http_get(port, "/metrics")
        assert status == 200
        labels = f'resource="{TEST_RESOURCE}"'
        assert f'kvminfo_plugin_registrations_total{{{labels},result="ok"}} 1.0' in text
        assert f"kvminfo_plugin_allocations_total{{{labels}}} 2.0" in text
        assert f'kvminfo_plugin_devices{{health="Healthy",{labels}}} 4.0' in text
        assert f"kvminfo_plugin_registered{{{labels}}} 1.0" in text
        with pytest.raises(grpc.RpcError):
            k.stub(TEST_RESOURCE).Allocate(api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=["nope"])]), timeout=5)
        _, text = http_get(port, "/metrics")
        assert f'kvminfo_plugin_errors_total{{kind="unknown_device",{labels}}} 1.0' in text


def test_default_resource_serves_the_real_dev_kvm(plugin_dir: Path) -> None:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this machine")
    with kubelet(plugin_dir) as k, running_plugin({"pluginDir": str(plugin_dir)}):
        k.wait_registered("devices.kvminfo.io/kvm")
        devices = k.latest("devices.kvminfo.io/kvm")
        assert len(devices) == 1000 and set(devices.values()) == {"Healthy"}
        container = k.admit("devices.kvminfo.io/kvm", 1)
        assert [(d.host_path, d.container_path, d.permissions) for d in container.devices] == [("/dev/kvm", "/dev/kvm", "rw")]


def test_emulator_refuses_what_the_kubelet_refuses(plugin_dir: Path) -> None:
    (plugin_dir / "plain-file").write_text("")

    def request(**fields: str) -> api.RegisterRequest:
        return api.RegisterRequest(**{"version": "v1beta1", "endpoint": "plain-file", "resource_name": "a.io/b", **fields})

    assert "version" in kubelet_refusal(request(version="v1alpha"), plugin_dir)
    assert "ResourceName" in kubelet_refusal(request(resource_name="kubernetes.io/kvm"), plugin_dir)
    assert "ResourceName" in kubelet_refusal(request(resource_name="kvm"), plugin_dir)
    assert "ResourceName" in kubelet_refusal(request(resource_name="notkubernetes.io/kvm"), plugin_dir)
    assert "ResourceName" in kubelet_refusal(request(resource_name="a.kubernetes.io/x"), plugin_dir)
    assert "ResourceName" in kubelet_refusal(request(resource_name="requests.a.io/x"), plugin_dir)
    assert "ResourceName" in kubelet_refusal(request(resource_name="a.io/b/c"), plugin_dir)
    assert "ResourceName" in kubelet_refusal(request(resource_name="a" * 245 + ".io/x"), plugin_dir)  # requests. + it > 253
    assert "relative" in kubelet_refusal(request(endpoint=str(plugin_dir / "x.sock")), plugin_dir)
    assert "does not exist" in kubelet_refusal(request(endpoint="missing.sock"), plugin_dir)
    assert "not a socket" in kubelet_refusal(request(), plugin_dir)


def test_old_kubelets_socket_path_authority_is_accepted(plugin_dir: Path, device: Path) -> None:
    # Kubelets before ~1.26 dialled with the socket path as HTTP/2 :authority.
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        socket_path = k.wait_registered(TEST_RESOURCE).socket
        with grpc.insecure_channel(f"unix://{socket_path}", options=[("grpc.default_authority", str(socket_path))]) as channel:
            options = api_grpc.DevicePluginStub(channel).GetDevicePluginOptions(api.Empty(), timeout=5)
        assert options.get_preferred_allocation_available


def test_cdi_dir_that_does_not_exist_is_created(plugin_dir: Path, device: Path, tmp_path: Path) -> None:
    cdi_dir = tmp_path / "var" / "run" / "cdi"  # /var/run/cdi is often missing on a fresh node
    settings = {**device_settings(plugin_dir, device, cdi=True), "cdiDir": str(cdi_dir)}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(TEST_RESOURCE)
        assert stat.S_IMODE(os.stat(cdi_dir).st_mode) == 0o755
        assert (cdi_dir / "test.kvminfo.io-node.json").is_file()


def test_preferred_allocation_never_exceeds_the_size(plugin_dir: Path, device: Path) -> None:
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device, slots=8)):
        k.wait_registered(TEST_RESOURCE)
        ids = sorted(k.latest(TEST_RESOURCE))
        response = k.stub(TEST_RESOURCE).GetPreferredAllocation(api.PreferredAllocationRequest(container_requests=[
            api.ContainerPreferredAllocationRequest(available_deviceIDs=ids, must_include_deviceIDs=[ids[5], ids[3], ids[1]],
                                                    allocation_size=1)]), timeout=5)
        assert list(response.container_responses[0].deviceIDs) == [ids[5]]


def test_allocate_with_an_empty_container_request(plugin_dir: Path, device: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kvminfo_plugin")
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)) as runtime:
        k.wait_registered(TEST_RESOURCE)
        known = sorted(k.latest(TEST_RESOURCE))[0]
        response = k.stub(TEST_RESOURCE).Allocate(api.AllocateRequest(container_requests=[
            api.ContainerAllocateRequest(devices_ids=[]), api.ContainerAllocateRequest(devices_ids=[known])]), timeout=5)
        empty, full = response.container_responses
        assert empty == api.ContainerAllocateResponse()
        assert [d.host_path for d in full.devices] == [str(device)]
        assert runtime.metrics.registry.get_sample_value("kvminfo_plugin_allocations_total",
                                                          {"resource": TEST_RESOURCE}) == 1
        allocated = [r.getMessage() for r in caplog.records if r.getMessage().startswith("allocated ")]
        assert allocated == [f"allocated {TEST_RESOURCE} {known} -> {device}"]


def test_health_when_the_device_directory_goes_and_comes_back(plugin_dir: Path, device: Path) -> None:
    # The poll is 60 s: only re-watching the recreated directory can see the node in time.
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        k.wait_registered(TEST_RESOURCE)
        for _ in range(2):  # the second round proves the new watch works as well as the first
            device.unlink()
            device.parent.rmdir()
            k.wait_health(TEST_RESOURCE, lambda d: set(d.values()) == {"Unhealthy"}, timeout_s=1.0)
            time.sleep(0.2)  # let the watcher fall back to the parent directory
            recreated = time.monotonic()
            device.parent.mkdir()
            make_char_device(device)
            k.wait_health(TEST_RESOURCE, lambda d: set(d.values()) == {"Healthy"}, timeout_s=1.0)
            assert time.monotonic() - recreated < 1.0


def test_device_directory_created_after_start_is_watched(plugin_dir: Path, tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"  # two levels missing: the watch climbs down as they appear
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, nested / "dev")):
        k.wait_registered(TEST_RESOURCE)
        assert set(k.latest(TEST_RESOURCE).values()) == {"Unhealthy"}
        nested.mkdir(parents=True)
        make_char_device(nested / "dev")
        k.wait_health(TEST_RESOURCE, lambda d: set(d.values()) == {"Healthy"}, timeout_s=1.0)


def test_plugin_dir_wiped_and_recreated_serves_and_registers_again(plugin_dir: Path, device: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kvminfo_plugin")
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        k.wait_registered(TEST_RESOURCE)
        k.stop()
        # The kubelet (or an operator) removed the whole directory. The plugin serves again as soon as its
        # socket goes, so it may bind a new one before rmtree's rmdir (ENOTEMPTY): remove until it is gone.
        while plugin_dir.exists():
            shutil.rmtree(plugin_dir, ignore_errors=True)
        time.sleep(0.3)
        recreated = time.monotonic()
        plugin_dir.mkdir()
        k.start()
        endpoint = k.wait_registered(TEST_RESOURCE, count=2, timeout_s=1.0)
        assert endpoint.registered_at - recreated < 1.0
        assert k.admit(TEST_RESOURCE, 1).devices[0].host_path == str(device)
    # Waiting for the directory is one or two lines, not a retry loop spinning while it is gone.
    cannot_serve = [r for r in caplog.records if "cannot serve" in r.getMessage()]
    assert 1 <= len(cannot_serve) <= 3, [r.getMessage() for r in cannot_serve][:5]


def test_serving_leaves_the_process_umask_alone(plugin_dir: Path, device: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Other threads create files while the socket is bound; a process-wide umask change would reach them.
    umask_calls: list[int] = []
    real_umask = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: umask_calls.append(mask) or real_umask(mask))
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)):
        endpoint = k.wait_registered(TEST_RESOURCE)
        assert stat.S_IMODE(os.stat(endpoint.socket).st_mode) == 0o600
        assert sorted(p.name for p in plugin_dir.iterdir()) == ["kubelet.sock", endpoint.socket.name]  # no temp name left
    assert umask_calls == []


def test_a_stop_landing_just_before_the_loop_clears_its_wakeup_is_not_lost(plugin_dir: Path, device: Path) -> None:
    """Found by the soak's overlap scenario (an old instance took > 5 s to exit on SIGTERM): a signal
    handled between the loop's stop check and its clearing of the wake-up event was lost until the
    next poll. The stop is made to land exactly there; the poll is 60 s."""
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device)) as runtime:
        k.wait_registered(TEST_RESOURCE)
        supervisor = runtime.supervisor
        real_clear = supervisor._wake.clear

        def stop_then_clear() -> None:  # SIGTERM arriving just before clear()
            supervisor._wake.clear = real_clear  # type: ignore[method-assign]
            runtime.stop()
            real_clear()

        supervisor._wake.clear = stop_then_clear  # type: ignore[method-assign]
        stopping = time.monotonic()
        supervisor._wake.set()  # let the loop go round once
        deadline = time.monotonic() + 5
        while any(t.name == "plugin-under-test" and t.is_alive() for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the stop was lost until the next poll"
            time.sleep(0.01)
        assert time.monotonic() - stopping < 2
