"""The Allocate seam (kvminfo_plugin.devices.allocation): the policies a resource's config
selects, and a new policy plugged in the way the README's layout section says."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_harness import kubelet, make_char_device, running_plugin

from kvminfo_plugin.config import DeviceGroup, ResourceConfig, config_from_mapping
from kvminfo_plugin.devices import allocation
from kvminfo_plugin.devices.allocation import DeviceSpecPolicy, policy_for
from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api

RESOURCE = "test.kvminfo.io/seam"



def test_the_config_selects_the_policy() -> None:
    plain, cdi = config_from_mapping({"resources": [
        {"name": "a.io/plain", "devices": ["/dev/kvm"]}, {"name": "a.io/cdi", "devices": ["/dev/kvm"], "cdi": True}]}).resources
    assert type(policy_for(plain)).__name__ == "DeviceSpecPolicy"
    assert type(policy_for(cdi)).__name__ == "CdiPolicy"


class GroupEnvPolicy:
    """A resource with its own Allocate behaviour: the DeviceSpecs, plus an env var
    naming the groups handed out (as GPU plugins name visible devices)."""

    def __init__(self, resource: ResourceConfig) -> None:
        self._specs = DeviceSpecPolicy(resource)

    def container_response(self, groups: tuple[DeviceGroup, ...]) -> api.ContainerAllocateResponse:
        response = self._specs.container_response(groups)
        response.envs["TEST_GROUPS"] = ",".join(g.name for g in groups)
        return response

    def describe(self, groups: tuple[DeviceGroup, ...]) -> str:
        return "groups " + ",".join(g.name for g in groups)


def test_a_resource_with_its_own_allocate_behaviour_plugs_in(plugin_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # The two touches the README names besides the new class: one line in POLICIES,
    # and the config rule that selects it (here: this resource's name).
    monkeypatch.setitem(allocation.POLICIES, "groupEnv", GroupEnvPolicy)
    chosen = ResourceConfig.allocation.fget  # type: ignore[attr-defined]
    monkeypatch.setattr(ResourceConfig, "allocation", property(lambda r: "groupEnv" if r.name == RESOURCE else chosen(r)))
    device = make_char_device(tmp_path / "seam0")
    settings = {"pluginDir": str(plugin_dir), "resources": [{"name": RESOURCE, "devices": [str(device)], "slots": 2}]}
    with kubelet(plugin_dir) as k, running_plugin(settings):
        k.wait_registered(RESOURCE)
        [group_name] = {i.rsplit("-", 1)[0] for i in k.latest(RESOURCE)}  # slot IDs are <group>-<index>
        container = k.admit(RESOURCE, 1)
    assert dict(container.envs) == {"TEST_GROUPS": group_name}
    assert [(d.host_path, d.container_path) for d in container.devices] == [(str(device), str(device))]
