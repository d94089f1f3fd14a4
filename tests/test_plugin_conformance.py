"""Issue 10: device groups, CDI specs a runtime accepts and keeps finding, the
kubelet's own rules, owning only what we created, exclusive devices.

Each numbered case of the issue is a test here (or in test_plugin_process.py,
where it needs the real process); the kubelet is tests/kubelet_emulator.py, the
device nodes are real (mknod clones of /dev/null, a pty held with TIOCEXCL),
and CDI specs are checked with tests/cdi_rules.py (the CDI project's JSON schema
and rules, not the plugin's).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import cdi_rules
import pytest
from plugin_harness import kubelet, make_char_device, running_plugin

from kvminfo.common.errors import KvminfoError
from kvminfo_plugin.config import config_from_mapping
from kvminfo_plugin.devices.inventory import Inventory
from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api

NET = "test.kvminfo.io/vhost-net"



@pytest.fixture
def nodes(tmp_path: Path) -> tuple[Path, Path]:
    devdir = tmp_path / "dev"
    devdir.mkdir()
    return make_char_device(devdir / "vhost-net"), make_char_device(devdir / "tun")


def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)


def _paths(container: api.ContainerAllocateResponse) -> list[str]:
    return [d.host_path for d in container.devices]


# ---- case 1: a unit is a group of nodes ------------------------------------------------------


def test_case1_two_nodes_of_one_resource_come_together(plugin_dir: Path, nodes: tuple[Path, Path]) -> None:
    """`devices: [/dev/vhost-net, /dev/net/tun]` (the README's example) used to give a container
    only the first node; QEMU needs both. Now the list is one group: every unit holds both."""
    vhost, tun = nodes
    settings = {"pluginDir": str(plugin_dir), "pollIntervalSeconds": 60,
                "resources": [{"name": NET, "devices": [str(vhost), str(tun)], "slots": 3}]}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(NET)
        assert len(k.latest(NET)) == 3  # 3 slots of one group, not 3 per node
        for count in (1, 2, 3):
            assert _paths(k.admit(NET, count)) == [str(vhost), str(tun)]
        tun.unlink()  # the group's health is all its nodes'
        k.wait_health(NET, lambda d: set(d.values()) == {"Unhealthy"}, timeout_s=1.0)
        make_char_device(tun)
        k.wait_health(NET, lambda d: set(d.values()) == {"Healthy"}, timeout_s=1.0)


def test_case1_independent_groups_each_have_their_own_slots(plugin_dir: Path, nodes: tuple[Path, Path]) -> None:
    first, second = nodes
    settings = {"pluginDir": str(plugin_dir), "pollIntervalSeconds": 60, "resources": [
        {"name": NET, "groups": [{"devices": [str(first)]}, {"devices": [str(second)]}], "slots": 2}]}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(NET)
        ids = sorted(k.latest(NET))
        assert len(ids) == 4
        by_group: dict[str, list[str]] = {}
        for device_id in ids:
            by_group.setdefault(device_id.rsplit("-", 1)[0], []).append(device_id)
        assert len(by_group) == 2
        path_of: dict[str, str] = {}
        for prefix, group_ids in by_group.items():
            response = k.stub(NET).Allocate(api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=group_ids)]), timeout=5)  # both slots of one group
            [path_of[prefix]] = _paths(response.container_responses[0])  # its one node, once
        assert sorted(path_of.values()) == sorted(map(str, nodes))
        second.unlink()  # only that group's slots go
        latest = k.wait_health(NET, lambda d: list(d.values()).count("Unhealthy") == 2, timeout_s=1.0)
        [kept] = [prefix for prefix, path in path_of.items() if path == str(first)]
        assert sorted(i for i, h in latest.items() if h == "Healthy") == sorted(by_group[kept])


@pytest.mark.parametrize("resource, field, fragment", [
    ({"devices": ["/dev/a"], "groups": [{"devices": ["/dev/b"]}]}, "resources[0]", "not both"),
    ({}, "resources[0]", "needs devices"),
    ({"groups": []}, "resources[0].groups", "at least one group"),
    ({"groups": [{"devices": ["/dev/a"]}, {"devices": ["/dev/a"]}]}, "resources[0].groups[1].devices", "already in groups[0]"),
    ({"groups": [{"paths": ["/dev/a"]}]}, "resources[0].groups[0].paths", "unknown field"),
    ({"groups": [{"devices": ["dev/a"]}]}, "resources[0].groups[0].devices[0]", "absolute path"),
])
def test_case1_bad_groups_name_the_field(resource: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(KvminfoError) as caught:
        config_from_mapping({"resources": [{"name": "a.io/x", **resource}]})
    assert str(caught.value).startswith(f"{field}:") and fragment in str(caught.value), caught.value


# ---- cases 2, 3, 4, 5: CDI specs -------------------------------------------------------------


def _spec(cdi_dir: Path, name: str) -> dict[str, object]:
    return json.loads((cdi_dir / name).read_text())


NET_SPEC = "test.kvminfo.io-vhost-net.json"  # the CDI spec file the plugin writes for NET (<vendor>-<class>.json)


def net_cdi_settings(plugin_dir: Path, cdi_dir: Path, nodes: tuple[Path, Path], **extra: object) -> dict[str, object]:
    """Plugin settings serving NET (both nodes, one group) with CDI specs in ``cdi_dir``, plus ``extra`` fields."""
    return {"pluginDir": str(plugin_dir), "cdiDir": str(cdi_dir), **extra,
            "resources": [{"name": NET, "devices": [str(n) for n in nodes], "cdi": True}]}

def test_case2_the_cdi_spec_outlives_the_plugin(plugin_dir: Path, nodes: tuple[Path, Path], tmp_path: Path) -> None:
    cdi_dir = tmp_path / "cdi"
    settings = net_cdi_settings(plugin_dir, cdi_dir, nodes)
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(NET)
        written = (cdi_dir / NET_SPEC).read_bytes()
    # A container of an admitted pod restarting now (plugin down) must still resolve its CDI name.
    assert (cdi_dir / NET_SPEC).read_bytes() == written
    spec = json.loads(written)
    assert cdi_rules.problems(spec) == [] and cdi_rules.host_node_problems(spec) == []
    with kubelet(plugin_dir) as k, running_plugin(settings):  # the next instance takes it over as is
        k.wait_registered(NET)
        assert (cdi_dir / NET_SPEC).read_bytes() == written


def test_case3_a_removed_cdi_spec_is_written_again(plugin_dir: Path, nodes: tuple[Path, Path], tmp_path: Path) -> None:
    cdi_dir = tmp_path / "run" / "cdi"
    spec_file = cdi_dir / NET_SPEC
    settings = net_cdi_settings(plugin_dir, cdi_dir, nodes, pollIntervalSeconds=60)
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(NET)
        written = spec_file.read_bytes()
        spec_file.unlink()  # the poll is 60 s: only the watch can bring it back in time
        wait_until(lambda: spec_file.exists(), 2.0, "the spec written again")
        assert spec_file.read_bytes() == written
        cdi_dir.rename(tmp_path / "old-cdi")  # a cleaned /var/run/cdi: the directory goes (at once: the
        shutil.rmtree(tmp_path / "old-cdi")  # plugin would otherwise refill it under a recursive delete)
        wait_until(lambda: spec_file.exists(), 2.0, "the spec and its directory written again")
        spec_file.write_text('{"cdiVersion": "0.3.0", "kind": "test.kvminfo.io/vhost-net", "devices": []}')
        wait_until(lambda: spec_file.is_file() and spec_file.read_bytes() == written, 2.0, "the spec's content restored")


def test_case3_restored_within_one_poll_without_inotify(plugin_dir: Path, nodes: tuple[Path, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from kvminfo_plugin.devices import cdi

    monkeypatch.setattr(cdi.SpecKeeper, "_on_event", lambda self, event: None)  # as if inotify missed it
    cdi_dir = tmp_path / "cdi"
    spec_file = cdi_dir / NET_SPEC
    settings = net_cdi_settings(plugin_dir, cdi_dir, nodes, pollIntervalSeconds=0.5)
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(NET)
        spec_file.unlink()
        wait_until(lambda: spec_file.exists(), 1.5, "the spec written again by the poll")


def test_case3_slots_are_unhealthy_while_the_spec_cannot_be_written(plugin_dir: Path, nodes: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    """CDI names the runtime cannot resolve must not be handed out as if all were well."""
    cdi_dir = tmp_path / "cdi"
    spec_file = cdi_dir / NET_SPEC
    settings = net_cdi_settings(plugin_dir, cdi_dir, nodes, pollIntervalSeconds=60)
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(NET)
        while not spec_file.is_dir():  # a directory where the spec goes: it cannot be written (EISDIR)
            spec_file.unlink(missing_ok=True)
            try:
                spec_file.mkdir()
            except FileExistsError:
                pass  # the plugin wrote it back first; again
        k.wait_health(NET, lambda d: set(d.values()) == {"Unhealthy"}, timeout_s=2.0)
        spec_file.rmdir()
        k.wait_health(NET, lambda d: set(d.values()) == {"Healthy"}, timeout_s=2.0)
        assert cdi_rules.problems(json.loads(spec_file.read_text())) == []


@pytest.mark.parametrize("name, version", [
    ("test.kvminfo.io/vhost.net", "0.6.0"),  # a '.' in the class (as nvidia.com/mig-1g.5gb) needs 0.6.0
    ("test.kvminfo.io/kvm", "0.3.0"),
])
def test_case4_cdi_version_is_the_minimum_the_spec_needs(plugin_dir: Path, tmp_path: Path, name: str, version: str) -> None:
    cdi_dir = tmp_path / "cdi"
    settings = {"pluginDir": str(plugin_dir), "cdiDir": str(cdi_dir),  # /dev/null: a short, readable device name
                "resources": [{"name": name, "devices": ["/dev/null"], "cdi": True, "permissions": "r"}]}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(name)
        [spec_file] = cdi_dir.iterdir()
        spec = json.loads(spec_file.read_text())
    assert cdi_rules.problems(spec) == [], cdi_rules.problems(spec)
    assert spec["cdiVersion"] == version == cdi_rules.minimum_version(spec)


@pytest.mark.parametrize("resource, field", [
    ({"name": "test.kvminfo.io/9pfs"}, "resources[0].name"),  # class must start with a letter
    ({"name": "test.kvminfo.io/x", "cdiKind": "9vendor.io/x"}, "resources[0].cdiKind"),
    ({"name": "test.kvminfo.io/x", "cdiKind": "vendor.io/x-"}, "resources[0].cdiKind"),
])
def test_case4_cdi_naming_rules_refuse_at_start(resource: dict[str, str], field: str) -> None:
    with pytest.raises(KvminfoError) as caught:
        config_from_mapping({"resources": [{**resource, "devices": ["/dev/kvm"], "cdi": True}]})
    assert str(caught.value).startswith(f"{field}:") and "must start with a letter" in str(caught.value)
    # Without CDI the same name is a fine extended resource name.
    assert config_from_mapping({"resources": [{"name": resource["name"], "devices": ["/dev/kvm"]}]})


def test_case5_a_symlinked_node_is_resolved_in_the_cdi_spec(plugin_dir: Path, nodes: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    by_id = tmp_path / "dev" / "serial" / "by-id"
    by_id.mkdir(parents=True)
    link = by_id / "usb-FTDI_FT232R_A50285BI-if00-port0"
    link.symlink_to("../../vhost-net")  # relative, as udev writes them
    cdi_dir = tmp_path / "cdi"
    settings = {"pluginDir": str(plugin_dir), "cdiDir": str(cdi_dir),
                "resources": [{"name": "test.kvminfo.io/serial", "devices": [str(link)], "cdi": True, "slots": 1}]}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered("test.kvminfo.io/serial")
        spec = _spec(cdi_dir, "test.kvminfo.io-serial.json")
        assert cdi_rules.problems(spec) == [] and cdi_rules.host_node_problems(spec) == []
        [node] = spec["devices"][0]["containerEdits"]["deviceNodes"]  # type: ignore[index]
        assert node == {"path": str(link), "hostPath": str(nodes[0]), "fileMode": 0o666, "permissions": "rw"}
        link.unlink()  # udev re-enumerated: the name now points at another node
        link.symlink_to("../../tun")
        wait_until(lambda: _spec(cdi_dir, "test.kvminfo.io-serial.json")["devices"][0]["containerEdits"]  # type: ignore[index]
                   ["deviceNodes"][0].get("hostPath") == str(nodes[1]), 2.0, "the spec following the symlink")


# ---- case 7: the largest ListAndWatch message ------------------------------------------------


def test_case7_list_and_watch_size_is_computed_exactly() -> None:
    """The start-up check's arithmetic against protobuf's own serialization."""
    from kvminfo_plugin.config import list_and_watch_bytes

    for resource in ({"devices": ["/dev/kvm"], "slots": 1000},
                     {"groups": [{"devices": ["/dev/a"]}, {"devices": ["/" + "d" * 90]}], "slots": 1500},
                     {"devices": ["/dev/x"], "slots": 1}):
        [config] = config_from_mapping({"resources": [{"name": "a.io/x", **resource}]}).resources
        listing = api.ListAndWatchResponse(devices=[api.Device(ID=i, health="Unhealthy")
                                                    for i in Inventory.for_resource(config).ids])
        assert list_and_watch_bytes(config.groups, config.slots) == listing.ByteSize()


def test_case7_a_device_list_over_4_mib_is_refused_naming_slots() -> None:
    groups = [{"devices": ["/dev/ttyUSB0"]}, {"devices": ["/dev/ttyUSB1"]}]
    with pytest.raises(KvminfoError) as caught:
        config_from_mapping({"resources": [{"name": "a.io/x", "groups": groups, "slots": 100_000}]})
    message = str(caught.value)
    assert message.startswith("resources[0].slots:") and "4194304" in message and "\n" not in message
    fits = int(message.rsplit("at most ", 1)[1].split()[0])
    [config] = config_from_mapping({"resources": [{"name": "a.io/x", "groups": groups, "slots": fits}]}).resources
    assert api.ListAndWatchResponse(devices=[api.Device(ID=i, health="Unhealthy") for i in
                                             Inventory.for_resource(config).ids]).ByteSize() <= 4 * 1024 * 1024


# ---- case 8: own only what we created --------------------------------------------------------


def test_case8_an_exiting_instance_leaves_its_successors_socket(plugin_dir: Path, nodes: tuple[Path, Path]) -> None:
    settings = {"pluginDir": str(plugin_dir), "pollIntervalSeconds": 60,
                "resources": [{"name": NET, "devices": [str(nodes[0])], "slots": 2}]}
    with kubelet(plugin_dir) as k:
        with running_plugin(settings) as old:
            k.wait_registered(NET)
            with running_plugin(settings):  # a DaemonSet update with overlap: the new pod starts first
                endpoint = k.wait_registered(NET, count=2)
                socket_path = endpoint.socket
                time.sleep(0.5)  # the old instance sees its socket replaced and stands aside
                registrations = len(k.registrations)
                old.stop()  # the old pod ends
                time.sleep(0.5)
                assert socket_path.is_socket(), "the old instance deleted the new one's socket"
                assert not k.endpoints[NET].stream_ended
                # The old stream's end made the kubelet drop the new instance (runClient's lookup by
                # name, see kubelet_emulator.py), which registered again: once (twice when the
                # kubelet's clean-up of the dropped client lands after that registration), no ping-pong.
                assert k.deregistrations[0] is endpoint
                assert 1 <= len(k.registrations) - registrations <= 2
                assert _paths(k.admit(NET, 1)) == [str(nodes[0])]  # the kubelet still reaches the new one
            # The new instance removes its own socket on exit.
        assert not socket_path.exists()


# ---- case 6: the kubelet's rules --------------------------------------------------------------


@pytest.mark.parametrize("name", ["notkubernetes.io/kvm", "a.kubernetes.io/kvm", "kubernetes.io/kvm", "kvm",
                                  "requests.a.io/kvm", "a" * 245 + ".io/kvm", "a.io/b/c"])
def test_case6_names_the_kubelet_refuses_are_refused_at_start(name: str) -> None:
    with pytest.raises(KvminfoError, match=r"^resources\[0\]\.name: "):
        config_from_mapping({"resources": [{"name": name, "devices": ["/dev/kvm"]}]})


def test_case6_a_registration_the_kubelet_never_accepts_ends_the_plugin(plugin_dir: Path, nodes: tuple[Path, Path]) -> None:
    """A kubelet that does not speak v1beta1 any more answers every Register the same way."""
    from kvminfo_plugin.runtime import PluginRuntime

    settings = {"pluginDir": str(plugin_dir), "metricsPort": 0,
                "resources": [{"name": NET, "devices": [str(nodes[0])], "slots": 2}]}
    with kubelet(plugin_dir) as k:
        k.supported_version = "v1"
        runtime = PluginRuntime(config_from_mapping(settings))
        errors: list[BaseException] = []

        def run() -> None:
            try:
                runtime.run()
            except KvminfoError as err:
                errors.append(err)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(5)
        assert not thread.is_alive(), "still retrying a registration the kubelet will never accept"
        assert k.register_calls == 1
        assert len(errors) == 1 and "will refuse it every time" in str(errors[0]) and "not supported" in str(errors[0])
        assert not any(p.is_socket() and p.name != "kubelet.sock" for p in plugin_dir.iterdir())


# ---- case 9 (exclusive devices) needs a process without CAP_SYS_ADMIN: test_plugin_process.py ----


def test_case9_a_node_the_kernel_lists_is_healthy_without_being_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    """/sys/dev/char/<major>:<minor> answers "present, with a driver": no open(), so no DTR
    raised on a serial port and no exclusive device taken from its workload."""
    from kvminfo_plugin.devices import health

    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm")
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(health.os, "open", lambda path, *a, **kw: opened.append(str(path)) or real_open(path, *a, **kw))
    result = health.check_path("/dev/kvm")
    numbers = f"{os.major(os.stat('/dev/kvm').st_rdev)}:{os.minor(os.stat('/dev/kvm').st_rdev)}"
    assert result.healthy and result.reason == f"char {numbers}" and opened == []
    no_driver = health.check_path("/dev/null", sys_dev_char="/nonexistent")  # no sysfs: falls back to open()
    assert no_driver.healthy and opened == ["/dev/null"]
