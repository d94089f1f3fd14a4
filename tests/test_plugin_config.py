"""Config file + flags -> resources, and slot IDs (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvminfo.common.errors import KvminfoError
from kvminfo_plugin.config import FlagOverrides, config_from_mapping, load_config_file, path_slug
from kvminfo_plugin.devices.health import check_path
from kvminfo_plugin.devices.inventory import Inventory


def test_default_is_one_kvm_resource_that_does_not_collide_with_kubevirt() -> None:
    config = config_from_mapping({})
    [resource] = config.resources
    assert resource.name == "devices.kvminfo.io/kvm" != "devices.kubevirt.io/kvm"
    assert (resource.devices, resource.slots, resource.permissions, resource.cdi) == (("/dev/kvm",), 1000, "rw", False)
    assert str(config.plugin_dir) == "/var/lib/kubelet/device-plugins" and str(config.cdi_dir) == "/var/run/cdi"


def test_full_config_file(tmp_path: Path) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text("""
pluginDir: /var/snap/microk8s/common/var/lib/kubelet/device-plugins
cdiDir: /etc/cdi
metricsPort: 0
resources:
  - name: devices.kvminfo.io/kvm
    devices: [/dev/kvm]
    slots: 250
  - name: devices.kvminfo.io/vhost-net
    devices: [/dev/vhost-net, /dev/net/tun]
    slots: 110
    permissions: rw
    mounts: [{hostPath: /lib/modules, containerPath: /lib/modules}]
    envs: {VHOST: "1"}
    cdi: true
    cdiKind: kvminfo.io/net
""")
    config = load_config_file(path)
    kvm, net = config.resources
    assert kvm.slots == 250 and net.devices == ("/dev/vhost-net", "/dev/net/tun")
    assert net.mounts[0].read_only and net.envs == (("VHOST", "1"),) and net.effective_cdi_kind == "kvminfo.io/net"
    assert config.metrics_port == 0 and str(config.cdi_dir) == "/etc/cdi"


def test_flags_override_the_file() -> None:
    base = {"resources": [{"name": "a.io/x", "devices": ["/dev/x"], "slots": 3}]}
    changed = config_from_mapping(base, FlagOverrides(slots=7, cdi=True, plugin_dir="/k3s/dp", metrics_port=0))
    assert [(r.name, r.slots, r.cdi) for r in changed.resources] == [("a.io/x", 7, True)]
    assert str(changed.plugin_dir) == "/k3s/dp" and changed.metrics_port == 0
    replaced = config_from_mapping(base, FlagOverrides(resources=("b.io/tun=/dev/net/tun", "b.io/kvm=/dev/kvm")))
    assert [(r.name, r.devices, r.slots) for r in replaced.resources] == [
        ("b.io/tun", ("/dev/net/tun",), 1000), ("b.io/kvm", ("/dev/kvm",), 1000)]


def test_bad_cdi_kind_names_the_field() -> None:
    with pytest.raises(KvminfoError, match=r"resources\[0\]\.cdiKind"):
        config_from_mapping({"resources": [{"name": "a.io/x", "devices": ["/dev/x"], "cdiKind": "a/b/c"}]})


@pytest.mark.parametrize(("yaml_text", "mode"), [("", 0o666), ("cdiFileMode: 0640", 0o640), ("cdiFileMode: '0660'", 0o660),
                                             ("cdiFileMode: null", None)])
def test_cdi_file_mode_is_octal_as_yaml_writes_it(tmp_path: Path, yaml_text: str, mode: int | None) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"resources:\n  - name: a.io/x\n    devices: [/dev/x]\n    cdi: true\n    {yaml_text}\n")
    assert load_config_file(path).resources[0].cdi_file_mode == mode


@pytest.mark.parametrize(("extra", "said"), [({"cdiFileMode": 666, "cdi": True}, "leading 0"),
                                             ({"cdiFileMode": "rw-rw-rw-", "cdi": True}, "octal mode"),
                                             ({"cdiFileMode": True, "cdi": True}, "octal mode"),
                                             ({"cdiFileMode": 0o666}, "only with cdi: true")])
def test_bad_cdi_file_mode_names_the_field(extra: dict[str, object], said: str) -> None:
    with pytest.raises(KvminfoError, match=r"^resources\[0\]\.cdiFileMode: ") as caught:
        config_from_mapping({"resources": [{"name": "a.io/x", "devices": ["/dev/x"], **extra}]})
    assert said in str(caught.value)


def test_slot_ids_are_unique_short_and_name_the_node() -> None:
    long_path = "/dev/" + "deep/" * 30 + "node"
    config = config_from_mapping({"resources": [{"name": "a.io/x", "groups": [{"devices": ["/dev/kvm"]}, {"devices": [long_path]}],
                                                 "slots": 100}]})
    inventory = Inventory.for_resource(config.resources[0])
    assert len(inventory.ids) == 200 and len(set(inventory.ids)) == 200
    assert all(len(i) <= 63 for i in inventory.ids)
    assert inventory.ids[0] == "dev-kvm-00" and inventory.ids[-1].endswith("-deep-node-99")
    assert path_slug(long_path) != path_slug(long_path.replace("/dev/", "/dew/"))  # the hash keeps them apart
    groups = inventory.groups_for([inventory.ids[150], inventory.ids[3], inventory.ids[4]])
    assert [g.paths for g in groups] == [("/dev/kvm",), (long_path,)]


def test_check_path_on_real_nodes(tmp_path: Path) -> None:
    assert check_path("/dev/null").healthy
    assert check_path(str(tmp_path)).reason == "not a character device"
    assert check_path(str(tmp_path / "gone")).reason == "missing"


@pytest.mark.parametrize("content, fragment", [
    (b"a: 2001-13-45\n", "not valid YAML: month must be in 1..12"),  # a YAML constructor's ValueError
    (b"1: 2\nx: 3\n", "unknown field"),  # int and str keys together
    (b"resources: []\n\xff\n", "not UTF-8"),
    (b"a: \x13\n", "not valid YAML"),  # reader errors span two lines in PyYAML
    (b"? \"x\\ny\"\n: 1\n", "'x\\ny': unknown field"),  # a key holding a newline
    (b"resources:\n- {name: \"devices.kvminfo.io/kvm\\n\", devices: [/dev/kvm]}\n", "resources[0].name"),
    (b"pollIntervalSeconds: .inf\n", "pollIntervalSeconds"),  # Event.wait(inf) raises OverflowError
    (b"pollIntervalSeconds: 1" + b"0" * 400 + b"\n", "pollIntervalSeconds"),
    (b'a: "\\UF00ED36E"\n', "not valid YAML"),  # PyYAML's chr() raises OverflowError for this escape
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),  # RecursionError in the composer
])
def test_bad_yaml_is_one_line_naming_the_file(tmp_path: Path, content: bytes, fragment: str) -> None:
    """Found by the soak fuzzer: each of these was a traceback, a two-line message or accepted."""
    path = tmp_path / "plugin.yaml"
    path.write_bytes(content)
    with pytest.raises(KvminfoError) as caught:
        load_config_file(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message and fragment in message, message


def test_version_v1_is_optional_and_the_only_one() -> None:
    with_version = config_from_mapping({"version": "v1", "resources": [{"name": "a.io/x", "devices": ["/dev/x"]}]})
    assert with_version == config_from_mapping({"resources": [{"name": "a.io/x", "devices": ["/dev/x"]}]})
    with pytest.raises(KvminfoError, match=r"^version: unsupported config version 'v2' \(known: v1\)$"):
        config_from_mapping({"version": "v2"})


def test_a_flag_value_is_named_by_its_flag_and_a_file_value_by_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text("resources:\n  - {name: a.io/x, devices: [/dev/x], slots: 0}\n")
    with pytest.raises(KvminfoError, match=rf"^{path}: resources\[0\]\.slots: must be 1\.\.100000, got 0$"):
        load_config_file(path)
    assert load_config_file(path, FlagOverrides(slots=5)).resources[0].slots == 5  # the flag replaces the bad value
    with pytest.raises(KvminfoError, match=r"^--slots: must be 1\.\.100000, got 0$"):
        load_config_file(path, FlagOverrides(slots=0))
    with pytest.raises(KvminfoError, match=r"^--resource: expected an absolute path, got 'dev/y'$"):
        load_config_file(path, FlagOverrides(resources=("a.io/y=dev/y",)))
