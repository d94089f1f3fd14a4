"""scripts/image_pods.py's pod -> OCI runtime spec translation, which `make image`
uses to run every DaemonSet container under containerd (README, "The image").

The base is the spec containerd 1.6.20 really generated for the image
(tests/fixtures/containerd/); the pods are deploy/'s, resolved; the
allocations are the device plugin's own Allocate answers (its policies) for
its default config; the CDI spec is the one the plugin's code writes. What a
container must get is read from the manifest (Kubernetes "Configure a
Security Context for a Pod or Container") and the CDI spec's semantics.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FIXTURES, REPO
from test_deploy import DEPLOY, resolve

from kvminfo_plugin import config as plugin_config
from kvminfo_plugin.devices import allocation as plugin_allocation
from kvminfo_plugin.devices import cdi as plugin_cdi

sys.path.insert(0, str(REPO / "scripts"))
import image_pods  # noqa: E402

# The default image's ENTRYPOINT, its last in the Dockerfile (tini reaps libvirt's daemonized QEMU probe).
ENTRYPOINT = json.loads([line for line in (REPO / "Dockerfile").read_text().splitlines()
                         if line.startswith("ENTRYPOINT ")][-1].removeprefix("ENTRYPOINT "))
BASE = json.loads((FIXTURES / "containerd" / "ctr-1.6.20-seccomp-read-only.spec.json").read_text())
DAEMONSETS = [("device-plugin", "kvminfo-device-plugin"), ("nfd", "kvminfo-features-file"),
              ("nfd/hooks", "kvminfo-hook-relay"), ("nodefeature", "kvminfo-publish"),
              ("cleanup", "kvminfo-cleanup")]


def ctr(tmp_path: Path) -> image_pods.Ctr:
    runner = image_pods.Ctr("unused.sock", "localhost/kvminfo:0.1.0", tmp_path)
    runner._base, runner._entrypoint = BASE, ENTRYPOINT
    return runner


def pod(part: str, workload: str, tmp_path: Path) -> image_pods.Pod:
    return image_pods.pod_of(resolve(DEPLOY / part), workload, tmp_path / "node", False)


def kvm_resource(cdi: bool) -> plugin_config.ResourceConfig:
    (config_map,) = [o for o in resolve(DEPLOY / "device-plugin") if o["kind"] == "ConfigMap"]
    document = yaml.safe_load(config_map["data"]["device-plugin.yaml"])
    document["resources"][0]["cdi"] = cdi
    (resource,) = plugin_config.config_from_mapping(document).resources
    return resource


@pytest.mark.parametrize("part, workload", DAEMONSETS)
def test_every_container_gets_its_pods_security_context(part, workload, tmp_path):
    the_pod = pod(part, workload, tmp_path)
    for volume in the_pod.spec.get("volumes", []):  # what a node has before the pod (hostPath type Directory)
        if volume.get("hostPath", {}).get("type") == "Directory":
            the_pod.host_path(volume["hostPath"]["path"]).mkdir(parents=True)
    for container in the_pod.spec.get("initContainers", []) + the_pod.spec["containers"]:
        spec = image_pods.container_spec(ctr(tmp_path), the_pod, container)
        sc = {**the_pod.spec.get("securityContext", {}), **container["securityContext"]}  # container over pod
        process = spec["process"]
        assert process["user"]["uid"] == sc["runAsUser"] and process["user"]["gid"] == sc["runAsGroup"]
        added = [f"CAP_{c}" for c in sc["capabilities"].get("add", [])]  # drop: [ALL], then add
        assert all(process["capabilities"][k] == added for k in ("bounding", "effective", "permitted"))
        assert process["capabilities"]["inheritable"] == process["capabilities"]["ambient"] == []
        assert process["noNewPrivileges"] is True and spec["root"]["readonly"] is True
        assert spec["linux"]["seccomp"] == BASE["linux"]["seccomp"]  # RuntimeDefault: containerd's profile
        expected_args = container["command"] + container.get("args", []) if "command" in container \
            else [*ENTRYPOINT, *container["args"]]
        assert process["args"] == expected_args
        binds = {m["destination"]: m for m in spec["mounts"] if m["type"] == "bind"}
        volumes = {v["name"]: v for v in the_pod.spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            assert binds[mount["mountPath"]]["options"][-1] == ("ro" if mount.get("readOnly") else "rw")
            if "emptyDir" in volumes[mount["name"]]:  # the kubelet's emptyDir: 0777, writable by any uid of the pod
                assert stat.S_IMODE(os.stat(binds[mount["mountPath"]]["source"]).st_mode) == 0o777
        limits = container["resources"]["limits"]
        assert spec["linux"]["resources"]["memory"]["limit"] == image_pods.quantity_bytes(limits["memory"])
        assert spec["linux"]["resources"]["cpu"]["quota"] == image_pods.cpu_quota(limits["cpu"])
        assert "devices" not in spec["linux"]  # no device without an allocation


def test_the_plugins_allocation_becomes_a_device_node_and_a_cgroup_rule(tmp_path):
    resource = kvm_resource(cdi=False)
    answer = plugin_allocation.policy_for(resource).container_response(resource.groups[:1])
    the_pod = pod("nfd", "kvminfo-features-file", tmp_path)
    spec = image_pods.container_spec(ctr(tmp_path), the_pod, the_pod.spec["containers"][0], allocation=answer)
    rdev = os.stat("/dev/kvm").st_rdev
    (device,) = spec["linux"]["devices"]
    assert (device["path"], device["major"], device["minor"]) == ("/dev/kvm", os.major(rdev), os.minor(rdev))
    rule = spec["linux"]["resources"]["devices"][-1]
    assert rule == {"allow": True, "type": "c", "major": os.major(rdev), "minor": os.minor(rdev), "access": "rw"}
    assert spec["linux"]["resources"]["devices"][0] == {"allow": False, "access": "rwm"}  # runc's deny-all first


def test_cdi_names_resolve_from_the_plugins_spec_and_replace_its_device_specs(tmp_path):
    resource = kvm_resource(cdi=True)
    answer = plugin_allocation.policy_for(resource).container_response(resource.groups[:1])
    assert answer.cdi_devices and answer.devices  # both: a runtime without CDI still gets the node
    the_pod = pod("nfd", "kvminfo-features-file", tmp_path)
    cdi_dir = the_pod.host_path(image_pods.CDI_DIR)
    cdi_dir.mkdir(parents=True)
    spec_file = plugin_cdi.spec_path(cdi_dir, resource)
    spec_file.write_bytes(plugin_cdi.encode(plugin_cdi.build_spec(resource)))
    spec = image_pods.container_spec(ctr(tmp_path), the_pod, the_pod.spec["containers"][0], allocation=answer)
    assert [d["path"] for d in spec["linux"]["devices"]] == ["/dev/kvm"]  # once: CDI replaced the DeviceSpec's
    spec_file.unlink()  # a name the runtime cannot resolve: it refuses the container
    with pytest.raises(image_pods.Fail, match="no such device"):
        image_pods.container_spec(ctr(tmp_path), the_pod, the_pod.spec["containers"][0], allocation=answer)


def test_what_the_kubelet_would_refuse_is_refused(tmp_path):
    the_pod = pod("nodefeature", "kvminfo-publish", tmp_path)
    (container,) = the_pod.spec["containers"]
    root = {**container, "securityContext": {**container["securityContext"], "runAsUser": 0}}
    with pytest.raises(image_pods.Fail, match="runAsNonRoot"):
        image_pods.container_spec(ctr(tmp_path), the_pod, root)


def test_the_pod_checks_read_the_fully_qualified_labels_kvminfo_writes():
    """`make image` once read ``kvm-info-usable`` after every key had become
    ``feature.node.kubernetes.io/kvm-info-usable`` (issue 19, item 10): the checks read
    what the real command prints, from a recorded libvirt answer."""
    import subprocess
    import xml.etree.ElementTree as ET

    from conftest import DOMCAPS_FIXTURES, KVMINFO

    fixture = DOMCAPS_FIXTURES / "virt-manager-kvm-x86_64-latest.xml"
    printed = subprocess.run([str(KVMINFO), "labels", "--domcaps-xml", str(fixture)], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    labels = image_pods.label_lines(printed)
    host_model = ET.parse(fixture).findtext("cpu/mode[@name='host-model']/model")
    seen = image_pods.libvirt_labels("labels", labels, host_model)
    assert seen["host_model"] == host_model
    with pytest.raises(image_pods.Fail, match="this host's libvirt says"):
        image_pods.libvirt_labels("labels", labels, "another-model")
    unqualified = {k.removeprefix(image_pods.LABEL_PREFIX): v for k, v in labels.items()}
    with pytest.raises(image_pods.Fail, match="kvm-info-usable is None"):
        image_pods.libvirt_labels("labels", unqualified, host_model)
    without_libvirt = subprocess.run([str(KVMINFO), "labels", "--no-libvirt"], capture_output=True, text=True,
                                     timeout=60, check=True).stdout
    with pytest.raises(image_pods.Fail, match="no .*kvm-info-host-model label"):
        image_pods.libvirt_labels("labels", image_pods.label_lines(without_libvirt), None)
