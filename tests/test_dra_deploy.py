"""deploy/dra/, checked offline: objects valid for Kubernetes 1.36 (kubernetes-validate's
schemas, strict) and for the resource.k8s.io stand-in's DeviceClass rules; the DaemonSet's
args parse with the driver's own parser; RBAC limited to slices and reading claims; and
every CEL selector of the DeviceClasses and example claims evaluated with cel-python
(celpy, cloud-custodian's pure-Python CEL) against attributes the driver publishes for
recorded hosts, each expectation read from the recorded document itself.

The device input is shaped as the scheduler gives it (FACTS.md section 3; k8s
staging/src/k8s.io/dynamic-resource-allocation/cel): ``device.driver``,
``device.attributes[<domain>]`` (bare IDs under the driver's domain) with plain values,
``device.capacity``, ``device.allowMultipleAllocations``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from dra_apiserver_standin import device_class_problems
from test_deploy import object_id, resolve

from kvminfo_dra.attributes import DRIVER, kvm_attributes
from kvminfo_dra.devices import Device, node_devices
from kvminfo_dra.main import build_parser
from kvminfo_dra.upstream import ProbeOptions, collect, options_for_families

REPO = Path(__file__).resolve().parent.parent
DRA = REPO / "deploy" / "dra"
FIXTURES = REPO / "tests" / "fixtures" / "domcaps"
AMD_SEV = REPO.parent / "shared" / "corpus" / "domcaps" / "libvirt-11.3.0" / "qemu_10.0.0-q35.x86_64+amdsev.xml"
FAMILIES = ["caps", "cpu-models", "confidential", "tsc", "limits"]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return resolve(DRA) + resolve(DRA / "examples")


def _kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _published(path: Path, version: str) -> Device:
    options = options_for_families(ProbeOptions(use_kvm=False, domcaps_xml=str(path), replay_libvirt_version=version),
                                   FAMILIES)
    return node_devices(kvm_attributes(collect(options)), {})[0]


def _cel_device(device: Device) -> Any:
    """The CEL input for one published device; bare attribute IDs sit under the driver's domain."""
    body = device.to_api()
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in body["attributes"].items():
        domain, _, ident = name.rpartition("/")
        attributes.setdefault(domain or DRIVER, {})[ident] = next(iter(value.values()))
    return celpy.json_to_cel({"driver": DRIVER, "attributes": attributes, "capacity": {},
                              "allowMultipleAllocations": bool(body.get("allowMultipleAllocations"))})


def _selects(expression: str, device: Device) -> bool:
    environment = celpy.Environment()
    result = environment.program(environment.compile(expression)).evaluate({"device": _cel_device(device)})
    assert isinstance(result, celpy.celtypes.BoolType), f"{expression!r} gave {result!r}, not a bool"
    return bool(result)


def _claim_selectors(objects: list[dict[str, Any]], name: str) -> list[str]:
    (template,) = [t for t in _kind(objects, "ResourceClaimTemplate") if t["metadata"]["name"] == name]
    return [s["cel"]["expression"] for r in template["spec"]["spec"]["devices"]["requests"]
            for s in r["exactly"].get("selectors", [])]


def _class_selectors(objects: list[dict[str, Any]], name: str) -> list[str]:
    (device_class,) = [c for c in _kind(objects, "DeviceClass") if c["metadata"]["name"] == name]
    return [s["cel"]["expression"] for s in device_class["spec"]["selectors"]]


@pytest.mark.parametrize("part", [DRA, DRA / "examples"])
def test_kustomizations_resolve_like_kubectl(part: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the cross-check against real kustomize needs it")
    done = subprocess.run([kubectl, "kustomize", str(part)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    theirs = sorted((d for d in yaml.safe_load_all(done.stdout) if d), key=object_id)
    assert theirs == sorted(resolve(part), key=object_id)


def test_objects_validate_for_kubernetes_1_36(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, "1.36.0", strict=True)
    for device_class in _kind(objects, "DeviceClass"):
        assert device_class_problems(device_class) == []


def test_claims_name_existing_classes_and_the_extended_resource_is_the_device_plugins(objects) -> None:  # type: ignore[no-untyped-def]
    classes = {c["metadata"]["name"]: c for c in _kind(objects, "DeviceClass")}
    for template in _kind(objects, "ResourceClaimTemplate"):
        for request in template["spec"]["spec"]["devices"]["requests"]:
            assert request["exactly"]["deviceClassName"] in classes
    assert classes["kvm.kvminfo.io"]["spec"]["extendedResourceName"] == "devices.kvminfo.io/kvm"
    (pod,) = [p for p in _kind(objects, "Pod") if p["metadata"]["name"] == "kvm-extended-resource"]
    assert "devices.kvminfo.io/kvm" in pod["spec"]["containers"][0]["resources"]["limits"]
    assert "resourceClaims" not in pod["spec"]


def test_daemonset_runs_the_driver_with_args_its_parser_takes(objects) -> None:  # type: ignore[no-untyped-def]
    (daemonset,) = _kind(objects, "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    # no command: the image's entrypoint (tini -- kvminfo) runs `kvminfo dra-driver`, so tini
    # reaps libvirt's daemonized QEMU probe
    assert "command" not in container and container["args"][0] == "dra-driver"
    args = build_parser("kvminfo dra-driver").parse_args(container["args"][1:])
    # the libvirt facts from libvirt's embedded driver, its root on a writable emptyDir
    assert args.libvirt_uri == "qemu:///embed?root=/var/cache/kvminfo/libvirt" and not args.no_libvirt
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    assert mounts["libvirt-cache"] == "/var/cache/kvminfo" and "libvirt-cache" in empty
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_UID": "metadata.uid"}
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert paths == {"/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins", "/var/run/cdi", "/dev"}
    security = container["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    # root: libvirt's privileged driver needs exactly these four to start its QEMU probe
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE", "SETGID", "SETUID", "SETPCAP"]}
    assert security["readOnlyRootFilesystem"] is True
    assert spec["serviceAccountName"] == "kvminfo-dra-driver"


def test_rbac_grants_slices_and_reading_claims_only(objects) -> None:  # type: ignore[no-untyped-def]
    (role,) = _kind(objects, "ClusterRole")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {(("resource.k8s.io",), ("resourceslices",)): {"get", "list", "watch", "create", "update", "delete"},
                     (("resource.k8s.io",), ("resourceclaims",)): {"get"}}
    (policy,) = _kind(objects, "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["resourceslices"]
    (binding,) = _kind(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"] and binding["spec"]["validationActions"] == ["Deny"]


def test_device_classes_select_their_own_devices(objects) -> None:  # type: ignore[no-untyped-def]
    kvm = _published(FIXTURES / "this-host-kvm.xml", "9.0.0")
    tun = Device("tun", "tun", "tun", ("/dev/net/tun",))
    for name, device, expected in [("kvm.kvminfo.io", kvm, True), ("kvm.kvminfo.io", tun, False),
                                   ("tun.kvminfo.io", tun, True), ("vhost-net.kvminfo.io", tun, False)]:
        assert all(_selects(e, device) for e in _class_selectors(objects, name)) is expected, (name, device.name)


def test_windows_guest_selects_a_hyperv_host_only(objects) -> None:  # type: ignore[no-untyped-def]
    wanted = {"relaxed", "vapic", "vpindex", "runtime", "synic", "stimer", "reset", "frequencies",
              "reenlightenment", "tlbflush", "ipi"}  # libvirt's names of what the example asks for
    for path, version in [(FIXTURES / "virt-manager-kvm-x86_64-latest.xml", "9.0.0"),
                          (FIXTURES / "this-host-kvm.xml", "9.0.0")]:
        listed = {v.text for v in ET.parse(path).getroot().findall("./features/hyperv/enum[@name='features']/value")}
        device = _published(path, version)
        assert all(_selects(e, device) for e in _claim_selectors(objects, "windows-guest-kvm")) is (wanted <= listed), path


def test_sev_snp_guest_selects_an_snp_host_only(objects) -> None:  # type: ignore[no-untyped-def]
    if not AMD_SEV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{AMD_SEV} is missing on CI")
        pytest.skip(f"{AMD_SEV}: no ../shared corpus beside this clone")
    selectors = _claim_selectors(objects, "sev-snp-guest-kvm")
    for path, version in [(AMD_SEV, "11.3.0"), (FIXTURES / "virt-manager-kvm-x86_64-latest.xml", "9.0.0"),
                          (FIXTURES / "this-host-kvm.xml", "9.0.0")]:
        sectypes = {v.text for v in ET.parse(path).getroot().findall("./features/launchSecurity/enum/value")}
        assert all(_selects(e, _published(path, version)) for e in selectors) is ("sev-snp" in sectypes), path


def test_a_missing_attribute_is_not_selected_and_not_an_error(objects) -> None:  # type: ignore[no-untyped-def]
    bare = Device("kvm", "kvm", "kvm", ("/dev/kvm",))  # a node whose facts are all unknown
    for name in ("windows-guest-kvm", "sev-snp-guest-kvm"):
        assert not all(_selects(e, bare) for e in _claim_selectors(objects, name))


def test_admission_policy_pins_slice_writes_to_the_pods_node(objects) -> None:  # type: ignore[no-untyped-def]
    """The ValidatingAdmissionPolicy's CEL, evaluated with celpy as the API server would for a
    ResourceSlice write (variables, matchConditions and validations of admissionregistration/v1).
    objectNodeName uses CEL's optional syntax (`.?`), which cel-python does not parse: its value is
    given as that expression means (the written or, on DELETE, the old object's spec.nodeName)."""
    (policy,) = _kind(objects, "ValidatingAdmissionPolicy")
    spec = policy["spec"]
    environment = celpy.Environment()

    def evaluate(expression: str, activation: dict[str, Any]) -> Any:
        return environment.program(environment.compile(expression)).evaluate(activation)

    def admitted(username: str, extra: dict[str, list[str]], node: str) -> bool:
        request = {"userInfo": {"username": username, "extra": extra}, "operation": "CREATE"}
        activation = {"request": celpy.json_to_cel(request)}
        if not all(bool(evaluate(c["expression"], activation)) for c in spec["matchConditions"]):
            return True  # the policy does not apply
        variables = {v["name"]: evaluate(v["expression"], activation)
                     for v in spec["variables"] if ".?" not in v["expression"]}
        variables["objectNodeName"] = celpy.celtypes.StringType(node)
        activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})
        return all(bool(evaluate(v["expression"], activation)) for v in spec["validations"])

    driver = "system:serviceaccount:kvminfo:kvminfo-dra-driver"
    bound = {"authentication.kubernetes.io/node-name": ["node-a"]}
    assert admitted(driver, bound, "node-a")
    assert not admitted(driver, bound, "node-b")
    assert not admitted(driver, {}, "node-a")  # a token bound to no node
    assert admitted("system:node:node-b", {}, "node-b")  # not the driver: not this policy's business


def test_the_part_deletes_only_itself_and_follows_deploy_image(tmp_path: Path) -> None:
    """`kubectl delete -k deploy/dra` (docs/dra.md's uninstall) deletes what the part renders: it
    must not render the kvminfo Namespace (that took the device plugin and the labellers with it)
    nor any other part's object; and retargeting deploy/image (README: "the one place that names
    the image") must retarget the driver too."""
    others = ["namespace", "kvm-nodes", "device-plugin", "nfd", "nfd/hooks", "nodefeature", "examples", "cleanup"]
    theirs = {object_id(o) for part in others for o in resolve(REPO / "deploy" / part)}
    ours = [object_id(o) for o in resolve(DRA)]
    assert [key for key in ours if key[0] == "Namespace" or key in theirs] == []
    copy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", copy)
    image = copy / "image" / "kustomization.yaml"
    component = yaml.safe_load(image.read_text())
    component["images"] = [{"name": "localhost/kvminfo", "newName": "registry.example/kvminfo", "newTag": "9.9.9"}]
    image.write_text(yaml.safe_dump(component))
    (daemonset,) = [o for o in resolve(copy / "dra") if o["kind"] == "DaemonSet"]
    assert {c["image"] for c in daemonset["spec"]["template"]["spec"]["containers"]} == {"registry.example/kvminfo:9.9.9"}
