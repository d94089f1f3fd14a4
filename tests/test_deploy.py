"""deploy/ and the Dockerfile, checked offline.

- Every kustomization resolves, the top-level one (deploy/) included (a small
  resolver here for the fields we use, cross-checked against `kubectl
  kustomize` where kubectl exists: the development machines' image has kubectl
  1.32 with kustomize v5.5; no usable renderer is installable from Debian 12,
  whose kubernetes-client 1.20.2 embeds kustomize v2.0.3, which refuses a
  directory in `resources` and configMapGenerator `options`, and PyPI has no
  kustomize binary package installable here), and every object validates
  against the Kubernetes schemas (kubernetes-validate ships them, strict:
  unknown fields fail) or, for NFD's NodeFeatureRule, against the CRD schema
  in tests/fixtures/nfd/.
- The security settings are asserted per workload, not just present.
- Every container's args parse with the real command's own argparse parser,
  the device plugin's ConfigMap with its real config loader, and the
  NodeFeatureRule sample is evaluated against a NodeFeature built from a
  real probe (Hyper-V kernel injected at the ioctl layer).
- The NFD relay hook is extracted from its ConfigMap and run with /bin/sh.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from apiserver_standin import strict
from conftest import FIXTURES, KVMINFO, REPO, require_real
from kvm_fakes import KVM_HYPERV_CAPS, HyperVKernel
from other_user import reach_script, unreadable_checkout

from kvminfo.collect import collect
from kvminfo.commands import features_file as features_file_command
from kvminfo.commands import publish as publish_command
from kvminfo.model import ProbeOptions
from kvminfo.output.featurefile import render_feature_file
from kvminfo.output.nodefeature import build_nodefeature
from kvminfo.sources import ioctl as kvm_ioctl
from kvminfo.sources.libvirt_embed import embedded_root
from kvminfo_plugin import config as plugin_config
from kvminfo_plugin import main as plugin_main
from kvminfo_plugin.devices import cdi as plugin_cdi

DEPLOY = REPO / "deploy"
TOP = "."  # deploy/kustomization.yaml: the whole thing in one step
PARTS = [TOP, "namespace", "kvm-nodes", "device-plugin", "nfd", "nfd/hooks", "nodefeature", "examples", "cleanup"]
TOP_PARTS = ["namespace", "kvm-nodes", "device-plugin", "nfd"]  # what the top-level installs
LABELLERS = ["kvminfo-features-file", "kvminfo-hook-relay", "kvminfo-publish"]
NAMESPACE = "kvminfo"
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]  # oldest we claim .. newest shipped
KVM_RESOURCE = plugin_config.DEFAULT_RESOURCE
# workload -> the host paths it may mount, and whether it may run as root (uid 0)
ALLOWED = {
    "kvminfo-device-plugin": ({"/var/lib/kubelet/device-plugins", "/var/run/cdi", "/dev"}, True),
    "kvminfo-features-file": ({"/etc/kubernetes/node-feature-discovery/features.d"}, True),
    "kvminfo-hook-relay": ({"/etc/kubernetes/node-feature-discovery/source.d"}, True),
    "kvminfo-publish": (set(), False),
    "kvm-vm-example": (set(), False),
    "kvm-check": (set(), False),
    "kvm-windows-guest": (set(), False),
    "kvm-nested-guest": (set(), False),
    "kvminfo-cleanup": ({"/var/run/cdi", "/etc/kubernetes/node-feature-discovery/features.d",
                         "/etc/kubernetes/node-feature-discovery/source.d"}, True),
}
# libvirt src/qemu/qemu_process.c qemuProcessQMPLaunch (DAC_OVERRIDE for the probe) and
# src/util/virutil.c virSetUIDGIDWithCaps (setregid/setgroups, setreuid, the bounding set).
LIBVIRT_AS_ROOT_CAPS = ["DAC_OVERRIDE", "SETGID", "SETUID", "SETPCAP"]
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images", "configMapGenerator", "components", "namePrefix"}
VERSION = next(line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines()
               if line.startswith("version = "))
IMAGE = f"localhost/kvminfo:{VERSION}"
# The device plugin's own console script: `kvminfo device-plugin` without the CLI's entry point lookup.
PLUGIN_SCRIPT = "kvminfo-device-plugin"


# -- a small kustomize: what our kustomizations use (resources, components holding images, a
# configMapGenerator of files with kustomize's name hash, namePrefix, and the ConfigMap references of
# pod volumes following the generated names), anything else is refused; cross-checked against
# kubectl kustomize ----------------------------------------------------------------------------------

def kustomize_hash(data: dict[str, str]) -> str:
    """kustomize's ConfigMap name suffix (api/hasher: the JSON of kind, name and data, as Go's
    encoding/json writes it, sha256, the first 10 hex digits with 0 1 3 a e spelled g h k m t so
    that no word forms). The name hashed is empty: what kustomize v5 hashes (cross-checked against
    kubectl kustomize by test_kustomization_resolves_like_kubectl)."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
    encoded = encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # Go's HTML escaping
    return hashlib.sha256(encoded.encode()).hexdigest()[:10].translate(str.maketrans("013ae", "ghkmt"))


def resolve(directory: Path) -> list[dict[str, Any]]:
    return _resolve(directory, ())[0]


def _resolve(directory: Path, seen: tuple[Path, ...]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The objects, and {ConfigMap name as written: name as generated} for references above."""
    directory = directory.resolve()
    assert directory not in seen, f"kustomization cycle: {' -> '.join(map(str, seen + (directory,)))}"
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unsupported, f"{directory}: the test resolver does not implement {sorted(unsupported)}"
    assert kustomization["kind"] == "Kustomization"
    objects: list[dict[str, Any]] = []
    renamed: dict[str, str] = {}
    for entry in kustomization.get("resources", []):
        target = directory / entry
        assert target.exists(), f"{directory}/kustomization.yaml: resource {entry} does not exist"
        if target.is_dir():
            below, names = _resolve(target, seen + (directory,))
            objects += below
            renamed.update(names)
        else:
            objects += [doc for doc in yaml.safe_load_all(target.read_text()) if doc is not None]
    for generator in kustomization.get("configMapGenerator", []):
        assert set(generator) <= {"name", "namespace", "files", "options"}, generator
        options = generator.get("options", {})
        assert set(options) <= {"disableNameSuffixHash", "labels"}, options
        data = {}
        for entry in generator["files"]:
            key, _, file = entry.rpartition("=")
            data[key or Path(file).name] = (directory / file).read_text()
        name = generator["name"]
        if not options.get("disableNameSuffixHash"):
            renamed[name] = name = f"{name}-{kustomize_hash(data)}"
        metadata = {"name": name, **({"namespace": generator["namespace"]} if "namespace" in generator else {}),
                    **({"labels": options["labels"]} if "labels" in options else {})}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    for component in kustomization.get("components", []):
        spec = yaml.safe_load((directory / component / "kustomization.yaml").read_text())
        assert spec["kind"] == "Component" and set(spec) <= {"apiVersion", "kind", "images"}, component
        for rule in spec.get("images", []):
            set_image(objects, rule)
    if prefix := kustomization.get("namePrefix"):
        assert {o["kind"] for o in objects} == {"ConfigMap"}, "the resolver prefixes ConfigMaps only"
        current = {new: old for old, new in renamed.items()}
        for obj in objects:
            old = current.get(obj["metadata"]["name"], obj["metadata"]["name"])
            renamed[old] = obj["metadata"]["name"] = prefix + obj["metadata"]["name"]
    for _, spec in pod_templates(objects):  # kustomize's nameReference for the field we use
        for volume in spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] in renamed:
                volume["configMap"]["name"] = renamed[volume["configMap"]["name"]]
    ids = [object_id(o) for o in objects]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"{directory}: the same object twice: {duplicates}"
    for rule in kustomization.get("images", []):
        set_image(objects, rule)
    return objects, renamed


def set_image(objects: list[dict[str, Any]], rule: dict[str, str]) -> None:
    """kustomize's images transformer: a container image whose name is ``rule['name']`` gets
    newName, newTag (or digest)."""
    for _, spec in pod_templates(objects):
        for container in all_containers(spec):
            name, _, tag = container["image"].rpartition(":") if ":" in container["image"].split("/")[-1] \
                else (container["image"], "", "")
            if name != rule["name"]:
                continue
            name = rule.get("newName", name)
            if "digest" in rule:
                container["image"] = f"{name}@{rule['digest']}"
            else:
                tag = rule.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else name


def object_id(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj["kind"], meta.get("namespace", ""), meta.get("name", "")


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) for DaemonSets and Pods."""
    for obj in objects:
        if obj["kind"] == "DaemonSet":
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj["metadata"]["name"], obj["spec"]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {part: resolve(DEPLOY / part) for part in PARTS}


@pytest.fixture(scope="module")
def workloads(built) -> dict[str, dict[str, Any]]:
    found = {name: spec for objects in built.values() for name, spec in pod_templates(objects)}
    assert set(found) == set(ALLOWED), "a workload without a security allowance, or one went missing"
    return found


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


# -- resolving and schemas -------------------------------------------------------------------------

@pytest.mark.parametrize("part", PARTS)
def test_kustomization_resolves_like_kubectl(part, built):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the cross-check against real kustomize needs it")
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY / part)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    theirs = sorted((d for d in yaml.safe_load_all(done.stdout) if d), key=object_id)
    assert theirs == sorted(built[part], key=object_id)


def test_top_level_installs_its_parts_as_they_are(built):
    """deploy/: namespace, kvm-nodes, device-plugin and nfd, each exactly as applied alone."""
    assert [object_id(o) for o in by_kind(built[TOP], "Namespace")] == [("Namespace", "", NAMESPACE)]
    union = {object_id(o): o for part in TOP_PARTS for o in built[part]}
    assert {object_id(o): o for o in built[TOP]} == union


def test_each_part_deletes_only_itself(built):
    """Issue 19, 3: `kubectl delete -k deploy/<part>` deletes what the part renders, so no part may
    render an object another part renders (the Namespace above all: it took every other part with
    it). The namespace is its own part; the other parts only name it."""
    parts = [p for p in PARTS if p != TOP]
    owners: dict[tuple[str, str, str], str] = {}
    for part in parts:
        for key in map(object_id, built[part]):
            assert key not in owners, f"{key} is in both deploy/{owners[key]} and deploy/{part}"
            owners[key] = part
    assert [object_id(o) for o in built["namespace"]] == [("Namespace", "", NAMESPACE)]
    assert all(by_kind(built[part], "Namespace") == [] for part in parts if part != "namespace")


def test_parts_side_by_side_resolve(tmp_path):
    """Any overlay may list any parts together (no object twice); kubectl agrees where it exists."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    parts = [p for p in PARTS if p != TOP]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "resources": [os.path.relpath(DEPLOY / part, overlay) for part in parts]}))
    ours = resolve(overlay)
    assert len(ours) == sum(len(resolve(DEPLOY / part)) for part in parts)
    if shutil.which("kubectl"):
        done = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert sorted(map(object_id, (d for d in yaml.safe_load_all(done.stdout) if d))) == sorted(map(object_id, ours))


def rendered(directory: Path) -> list[list[dict[str, Any]]]:
    """The objects of a kustomization by our resolver and, where kubectl exists, by kustomize itself."""
    renderings = [resolve(directory)]
    if shutil.which("kubectl"):
        done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        renderings.append([d for d in yaml.safe_load_all(done.stdout) if d])
    return renderings


def images_of(objects: list[dict[str, Any]]) -> set[str]:
    return {c["image"] for _, spec in pod_templates(objects) for c in all_containers(spec)}


@pytest.fixture
def deploy_copy(tmp_path) -> Path:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    return copy


def test_images_name_a_registry_and_are_retargeted_in_one_place(built, deploy_copy, tmp_path):
    """No image may silently resolve to Docker Hub's library: each names its registry
    (localhost/ = imported into the node's runtime, never pulled). Issue 19, 12: the one
    images: entry (deploy/image, a component every part includes) moves every part, each
    applied alone as well as the top level; an overlay's images: entry still moves them all."""
    for part, objects in built.items():
        for name, spec in pod_templates(objects):
            for container in all_containers(spec):
                registry = container["image"].split("/")[0]
                assert "/" in container["image"] and (registry == "localhost" or "." in registry), (part, name)
                assert container["imagePullPolicy"] == "IfNotPresent", (part, name)
    component = deploy_copy / "image" / "kustomization.yaml"
    (rule,) = yaml.safe_load(component.read_text())["images"]
    assert rule == {"name": IMAGE.split(":")[0], "newName": IMAGE.split(":")[0], "newTag": VERSION}
    component.write_text(yaml.safe_dump({**yaml.safe_load(component.read_text()),
                                         "images": [{**rule, "newName": "registry.example/kvminfo",
                                                     "newTag": "9.9.9"}]}))
    for part in PARTS:
        if images_of(built[part]):
            for objects in rendered(deploy_copy / part):
                assert images_of(objects) == {"registry.example/kvminfo:9.9.9"}, part
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [os.path.relpath(DEPLOY, overlay)],
        "images": [{"name": "localhost/kvminfo", "newName": "registry.example/kvminfo", "newTag": "9.9.9"}]}))
    for objects in rendered(overlay):
        assert images_of(objects) == {"registry.example/kvminfo:9.9.9"}


@pytest.mark.parametrize("part, workload, file", [
    ("device-plugin", "kvminfo-device-plugin", "device-plugin/config/device-plugin.yaml"),
    ("nfd/hooks", "kvminfo-hook-relay", "nfd/hooks/relay-hook.sh"),
])
def test_a_config_change_rolls_the_daemonset(part, workload, file, built, deploy_copy):
    """Issue 19, 4: a DaemonSet whose ConfigMap changed must get a new pod template (kustomize's
    hash suffix in the ConfigMap's name), or its running pods keep the old config until restarted."""
    def template(objects: list[dict[str, Any]]) -> dict[str, Any]:
        (daemonset,) = [o for o in by_kind(objects, "DaemonSet") if o["metadata"]["name"] == workload]
        return daemonset["spec"]["template"]

    before = template(built[part])
    (deploy_copy / file).write_text((deploy_copy / file).read_text() + "# changed by an operator\n")
    for objects in rendered(deploy_copy / part):
        after = template(objects)
        assert after != before
        (config_map,) = by_kind(objects, "ConfigMap")
        assert {v["configMap"]["name"] for v in after["spec"]["volumes"] if "configMap" in v} == \
            {config_map["metadata"]["name"]}


def test_resolver_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("kind: Kustomization\nresources: []\nnameSuffix: -x\n")
    with pytest.raises(AssertionError, match="does not implement"):
        resolve(tmp_path)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("part", PARTS)
def test_every_builtin_object_validates_strictly(part, version, built):
    checked = 0
    for obj in built[part]:
        if obj["apiVersion"].startswith("nfd.k8s-sigs.io/"):  # a CRD kind: NFD's schema (tests/fixtures/nfd/)
            assert obj["kind"] == "NodeFeatureRule" and list(rule_validator().iter_errors(obj)) == [], obj
        else:
            kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked > 0


def test_strict_validation_catches_a_typo(built):
    daemonset = yaml.safe_load(yaml.safe_dump(by_kind(built["device-plugin"], "DaemonSet")[0]))
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)


def test_namespaced_objects_are_in_the_kvminfo_namespace(built):
    for part in ("namespace", "kvm-nodes", "device-plugin", "nfd", "nfd/hooks", "nodefeature", "cleanup"):
        for obj in built[part]:
            kind, namespace, _ = object_id(obj)
            if kind in ("Namespace", "NodeFeatureRule"):  # cluster scoped
                assert namespace == "", obj
            else:
                assert namespace == NAMESPACE, obj


# -- security settings, asserted -------------------------------------------------------------------

@pytest.mark.parametrize("workload", sorted(ALLOWED))
def test_container_security(workload, workloads):
    spec = workloads[workload]
    allowed_paths, may_be_root = ALLOWED[workload]
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    pod_security = spec.get("securityContext", {})
    for container in all_containers(spec):
        sc = container["securityContext"]
        where = f"{workload}/{container['name']}"
        assert sc["privileged"] is False, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["readOnlyRootFilesystem"] is True, where
        uid = sc.get("runAsUser", pod_security.get("runAsUser"))
        # drop ALL, add none; except a root container asking the embedded libvirt, whose
        # privileged QEMU driver starts its QEMU probe with these (the manifest says why)
        embedded_as_root = uid == 0 and any(a.startswith("qemu:///embed") for a in container.get("args", []))
        assert sc["capabilities"] == ({"drop": ["ALL"], "add": LIBVIRT_AS_ROOT_CAPS} if embedded_as_root
                                      else {"drop": ["ALL"]}), where
        seccomp = sc.get("seccompProfile") or pod_security.get("seccompProfile")
        assert seccomp == {"type": "RuntimeDefault"}, where
        non_root = sc.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        if may_be_root and uid == 0:
            assert non_root is False, where  # root, said out loud, with a reason in the manifest
        else:
            assert non_root is True and uid not in (None, 0), where
        resources = container["resources"]
        for kind in ("cpu", "memory"):
            assert resources["requests"][kind] and resources["limits"][kind], where
    host_paths = {v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
    assert host_paths == allowed_paths, workload
    assert spec.get("automountServiceAccountToken") is False or workload == "kvminfo-publish"


def test_plugin_pods_run_the_plugins_installed_console_script():
    """deploy/'s plugin containers run PLUGIN_SCRIPT; pip installs it into the image's
    /opt/kvminfo/bin (on PATH) from pyproject.toml, as it did into this venv."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[PLUGIN_SCRIPT] == "kvminfo_plugin.command:run"
    done = subprocess.run([str(KVMINFO.with_name(PLUGIN_SCRIPT)), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: {PLUGIN_SCRIPT} "), done.stderr
    done = subprocess.run([str(KVMINFO.with_name(PLUGIN_SCRIPT)), "--slots", "0"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1) and done.stderr.startswith(f"{PLUGIN_SCRIPT}: "), done.stderr


def test_device_plugin_specifics(workloads, built):
    spec = workloads["kvminfo-device-plugin"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    volume_types = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in spec["volumes"] if "hostPath" in v}
    assert volume_types["/var/lib/kubelet/device-plugins"] == "Directory"
    # Mixed clusters: a hostPath of the node itself (CharDevice) kept the pod in ContainerCreating on
    # nodes without KVM, so `rollout status` never finished. The directory exists on every node; "" would
    # let the runtime create a missing path as a directory. The plugin itself starts without the node.
    assert volume_types["/dev"] == "Directory" and "/dev/kvm" not in volume_types
    assert all(t in ("Directory", "DirectoryOrCreate") for t in volume_types.values()), volume_types
    (container,) = spec["containers"]
    # config from the ConfigMap, loaded by the plugin's own loader
    (config_map,) = by_kind(built["device-plugin"], "ConfigMap")
    config = plugin_config.config_from_mapping(yaml.safe_load(config_map["data"]["device-plugin.yaml"]))
    assert container["command"] == [PLUGIN_SCRIPT]
    args = plugin_main.build_parser(PLUGIN_SCRIPT).parse_args(container["args"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert Path(args.config).parent == Path(mount["mountPath"]) and Path(args.config).name in config_map["data"]
    config_volume = next(v for v in spec["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert [r.name for r in config.resources] == [KVM_RESOURCE]
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(config.plugin_dir) in mounted and str(config.cdi_dir) in mounted
    # every advertised device node's directory is mounted (read-only) from the host, at the same path
    host_path_of = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    for device in config.resources[0].devices:
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(Path(device).parent))
        assert host_path_of[mount["name"]] == mount["mountPath"] and mount["readOnly"] is True, device
    # the kubelet's termination-log mount point must not be made in the host's /dev
    assert not container.get("terminationMessagePath", "/dev/termination-log").startswith("/dev/")
    # liveness and readiness on the health endpoint, on the port the config serves
    port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert port["containerPort"] == config.metrics_port
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_readiness_probe_waits_for_the_plugins_start(workloads):
    """Issue 19, 14: probed at once, every start logged a failed readiness probe (connection
    refused: the port is bound a moment after exec). initialDelaySeconds must cover the CPU the
    plugin spends from exec to an answering /healthz, at the container's CPU limit, twice over
    (a cold image cache). CPU time of the real plugin against a kubelet emulator: the same
    under any load, where wall time is not."""
    from kubelet_emulator import KubeletEmulator

    (container,) = workloads["kvminfo-device-plugin"]["containers"]
    delay = container["readinessProbe"].get("initialDelaySeconds", 0)
    limit = cpu_cores(container["resources"]["limits"]["cpu"])
    tmp_path = Path(tempfile.mkdtemp(prefix="kvminfo-rp."))  # short: a unix socket path has a length limit
    (tmp_path / "plugins").mkdir()
    kubelet = KubeletEmulator(tmp_path / "plugins").start()
    with contextlib.closing(socket.socket()) as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    process = subprocess.Popen([str(KVMINFO.with_name(PLUGIN_SCRIPT)), "--plugin-dir", str(tmp_path / "plugins"),
                                "--cdi-dir", str(tmp_path / "cdi"), "--metrics-port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
                    assert answer.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"the plugin never answered /healthz: {process.communicate()[1]}")
                time.sleep(0.01)
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads
    finally:
        process.terminate()
        process.communicate(timeout=30)
        kubelet.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert 2 * cpu_s / limit <= delay, f"{cpu_s:.2f} s of CPU at {limit} cores needs more than {delay} s"


@pytest.mark.parametrize("workload, command", [
    ("kvminfo-features-file", features_file_command),
    ("kvminfo-hook-relay", features_file_command),
    ("kvminfo-publish", publish_command),
])
def test_labellers_args_parse_and_get_kvm_from_the_plugin(workload, command, workloads):
    (container,) = workloads[workload]["containers"]
    subcommand, *rest = container["args"]
    assert subcommand in ("features-file", "publish")
    args = command.build_parser(f"kvminfo {subcommand}").parse_args(rest)
    assert args.interval == "10m"
    assert container["resources"]["limits"][KVM_RESOURCE] == "1"  # /dev/kvm via the device cgroup, no hostPath
    if subcommand == "features-file":
        mount = container["volumeMounts"][0]["mountPath"]
        assert Path(args.output).parent.is_relative_to(mount)
    # libvirt in the pod: the embedded driver's root on a volume of the pod's own (writable
    # under the read-only root, its QEMU probe cached across container restarts)
    root = embedded_root(args.libvirt_uri)
    assert root is not None, args.libvirt_uri
    volumes = {v["name"]: v for v in workloads[workload].get("volumes", [])}
    (cache,) = [m for m in container["volumeMounts"] if Path(root).is_relative_to(m["mountPath"])]
    assert "emptyDir" in volumes[cache["name"]] and not cache.get("readOnly")
    # /metrics and /healthz on the named port the args serve; a startup probe that outlasts the
    # first round (its libvirt deadline, after imports), then readiness; no liveness (a restart
    # mends nothing a later round meets: the loop retries by itself)
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", args.metrics_port) and args.metrics_port > 0
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    startup = container["startupProbe"]
    window_s = startup["initialDelaySeconds"] + startup["periodSeconds"] * startup["failureThreshold"]
    assert window_s >= args.libvirt_timeout + 15
    assert "livenessProbe" not in container


def one_shot(args: list[str]) -> list[str]:
    """A labeller's args without what makes it loop (--interval) and serve (--metrics-port)."""
    args = list(args)
    for option in ("--interval", "--metrics-port"):
        del args[args.index(option):args.index(option) + 2]
    return args


def test_publisher_identity_and_rbac(workloads, built):
    spec = workloads["kvminfo-publish"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in spec["containers"][0]["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
    objects = built["nodefeature"]
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    (account,) = by_kind(objects, "ServiceAccount")
    (role,) = by_kind(objects, "Role")
    (binding,) = by_kind(objects, "RoleBinding")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert role["rules"] == [{"apiGroups": ["nfd.k8s-sigs.io"], "resources": ["nodefeatures"],
                              "verbs": ["get", "create", "update", "delete"]},  # delete: owner refs
                             {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]  # its own pod's owner
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]


def publish_once(kubeconfig: Path, node: str, pod: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("NODE_NAME", "POD_NAMESPACE", "POD_NAME", "KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    return subprocess.run([str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--node-name", node,
                           "--namespace", NAMESPACE, "--pod-name", pod, "--no-libvirt", "--retries", "0"],
                          capture_output=True, text=True, timeout=60, env=clean)


def role_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (role,) = by_kind(objects, "Role")
    return role["rules"]


@pytest.mark.parametrize("admission", [False, True])
def test_publisher_role_suffices_under_owner_reference_admission(built, tmp_path, admission):
    """Issue 19, 5: with the shipped Role as the API server's RBAC, with and without the
    OwnerReferencesPermissionEnforcement admission plugin, the publisher creates its NodeFeature
    with the owner reference to its DaemonSet and, after the DaemonSet is re-created (orphaning
    the object: a new uid), updates the reference."""
    from apiserver_standin import ApiServerStandin

    server = ApiServerStandin(role=role_rules(built["nodefeature"]), owner_reference_admission=admission).start()
    try:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        first = server.add_daemonset_pod(NAMESPACE, "kvminfo-publish", "kvminfo-publish-a1")
        done = publish_once(kubeconfig, "node-5", "kvminfo-publish-a1")
        assert done.returncode == 0, done.stderr
        stored = server.get_object(NAMESPACE, "kvminfo-node-5")
        assert stored["metadata"]["ownerReferences"][0]["uid"] == first["metadata"]["ownerReferences"][0]["uid"]
        del server.others[("apps/v1", "DaemonSet", NAMESPACE, "kvminfo-publish")]  # --cascade=orphan, re-created
        second = server.add_daemonset_pod(NAMESPACE, "kvminfo-publish", "kvminfo-publish-b2")
        done = publish_once(kubeconfig, "node-5", "kvminfo-publish-b2")
        assert done.returncode == 0, done.stderr
        stored = server.get_object(NAMESPACE, "kvminfo-node-5")
        assert stored["metadata"]["ownerReferences"][0]["uid"] == second["metadata"]["ownerReferences"][0]["uid"]
    finally:
        server.stop()


@pytest.mark.parametrize("missing, said", [
    ("delete", "owner-reference admission (OwnerReferencesPermissionEnforcement) requires 'delete' on nodefeatures"),
    ("update", "RBAC does not allow 'update' on nodefeatures (API group nfd.k8s-sigs.io)"),
    ("create", "RBAC does not allow 'create' on nodefeatures (API group nfd.k8s-sigs.io)"),
])
def test_a_403_names_the_verb_really_missing(built, tmp_path, missing, said):
    """The Role without one verb, under owner-reference admission: the one-line error names that
    verb (read from the API server's Status message), never verbs the Role grants."""
    from apiserver_standin import ApiServerStandin

    rules = [dict(rule, verbs=[v for v in rule["verbs"] if v != missing]) if "nodefeatures" in rule["resources"]
             else rule for rule in role_rules(built["nodefeature"])]
    server = ApiServerStandin(role=rules, owner_reference_admission=True).start()
    try:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        server.add_daemonset_pod(NAMESPACE, "kvminfo-publish", "kvminfo-publish-a1")
        if missing == "update":  # an object to update: someone made it before, without an owner
            server.put_object(NAMESPACE, {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature",
                                          "metadata": {"name": "kvminfo-node-5", "labels": {
                                              "nfd.node.kubernetes.io/node-name": "node-5"}},
                                          "spec": {"labels": {}}})
        done = publish_once(kubeconfig, "node-5", "kvminfo-publish-a1")
        assert done.returncode == 1
        (line,) = [line for line in done.stderr.splitlines() if "403 Forbidden" in line]
        assert said in line, line
        granted = {"get", "create", "update", "delete"} - {missing}
        assert not any(f"'{verb}'" in line for verb in granted), line
    finally:
        server.stop()


def test_images_are_what_make_image_builds(workloads):
    done = subprocess.run(["make", "-s", "-n", "image"], cwd=REPO, capture_output=True, text=True, timeout=30)
    image = done.stdout.split("IMAGE=", 1)[1].split()[0]
    assert image == IMAGE
    for name, spec in workloads.items():
        assert {c["image"] for c in all_containers(spec)} == {image}, name


# -- the labellers, run the way their pods run them ----------------------------------------------

# What runc lets every container open (its default device allowlist: null,
# zero, full, random, urandom, tty, ptmx, pts, tun, plus mknod of any node).
RUNC_DEFAULT_DEVICES = ("c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                        "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm")
DEVICE_CGROUPS = Path("/sys/fs/cgroup/devices")


def allocated_devices(container: dict[str, Any]) -> tuple[str, ...]:
    """The device cgroup rules the device plugin's Allocate adds for this container's resource requests."""
    rules = []
    for resource in plugin_config.config_from_mapping({}).resources:  # the default config
        if resource.name in container["resources"].get("limits", {}):
            for path in resource.devices:
                rdev = os.stat(path).st_rdev
                rules.append(f"c {os.major(rdev)}:{os.minor(rdev)} {resource.permissions}")
    return tuple(rules)


@contextlib.contextmanager
def device_cgroup(allowed: tuple[str, ...]) -> Iterator[Path]:
    """A cgroup-v1 device cgroup that allows only ``allowed``, like a container's."""
    if not (DEVICE_CGROUPS / "devices.deny").exists():
        pytest.skip("no cgroup-v1 device controller at /sys/fs/cgroup/devices to confine a process with")
    group = Path(tempfile.mkdtemp(prefix="kvminfo-test.", dir=DEVICE_CGROUPS))
    try:
        (group / "devices.deny").write_text("a")
        for rule in allowed:
            (group / "devices.allow").write_text(rule)
        yield group
    finally:
        group.rmdir()  # every process in it has exited by now


def as_the_pod_runs_it(spec: dict[str, Any], container: dict[str, Any], command: str,
                       writable: tuple[Path, ...] = (),
                       devices: tuple[str, ...] | None = None) -> subprocess.CompletedProcess:
    """Run a shell ``command`` with the container's identity and limits: the
    manifest's uid/gid, no capabilities at all, no_new_privs
    (allowPrivilegeEscalation: false), a device cgroup allowing runc's defaults
    plus what the device plugin allocates for its resource requests (or
    ``devices``), and a read-only root filesystem in a private mount
    namespace; ``writable`` directories get a fresh tmpfs, as a hostPath
    volume would be the only writable place."""
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (util-linux) not installed")
    if (why := unreadable_checkout()) is not None:
        require_real(why)
    pod, own = spec.get("securityContext", {}), container["securityContext"]
    uid = own.get("runAsUser", pod.get("runAsUser"))
    gid = own.get("runAsGroup", pod.get("runAsGroup", uid))
    mounts = "".join(f"mount -t tmpfs -o mode=0755 kvminfo-test {d} && " for d in writable)
    allowed = RUNC_DEFAULT_DEVICES + (allocated_devices(container) if devices is None else devices)
    with device_cgroup(allowed) as group:
        script = (f"echo $$ > {group}/cgroup.procs && {reach_script()}"
                  f"mount -o remount,bind,ro / && {mounts}"
                  f"setpriv --reuid {uid} --regid {gid} --clear-groups --inh-caps=-all --bounding-set=-all "
                  f"--no-new-privs sh -c '{command}'")
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_publisher_runs_as_its_pod_does(workloads, tmp_path):
    from apiserver_standin import ApiServerStandin

    spec = workloads["kvminfo-publish"]
    (container,) = spec["containers"]
    shared = Path(tempfile.mkdtemp(prefix="kvminfo-pub."))  # readable by the pod's uid
    server = ApiServerStandin().start()
    try:
        shared.chmod(0o755)
        kubeconfig = server.write_kubeconfig(shared / "kubeconfig")
        kubeconfig.chmod(0o644)
        # the device node the plugin hands over, with a systemd host's mode
        os.mknod(shared / "kvm", 0o666 | stat.S_IFCHR, os.stat("/dev/kvm").st_rdev)
        (shared / "kvm").chmod(0o666)
        args = one_shot(container["args"])
        command = (f"NODE_NAME=node-7 POD_NAMESPACE={NAMESPACE} {KVMINFO} {' '.join(args)} "
                   f"--kubeconfig {kubeconfig} --kvm-device {shared / 'kvm'}")
        done = as_the_pod_runs_it(spec, container, command)
        assert done.returncode == 0, done.stderr
        stored = server.get_object(NAMESPACE, "kvminfo-node-7")
        assert stored["spec"]["labels"]["feature.node.kubernetes.io/kvm-info-usable"] == "true"  # it could open the device as uid 65532
    finally:
        server.stop()
        shutil.rmtree(shared, ignore_errors=True)


def test_feature_file_writer_runs_as_its_pod_does(workloads):
    spec = workloads["kvminfo-features-file"]
    (container,) = spec["containers"]
    host_dir = Path(container["volumeMounts"][0]["mountPath"])
    scratch = Path(tempfile.mkdtemp(prefix="kvminfo-ff."))
    try:
        args = one_shot([a.replace(str(host_dir), str(scratch)) for a in container["args"]])
        output = args[args.index("--output") + 1]
        # root without a single capability: enough for a root-owned 0755 directory and /dev/kvm (0600 here)
        done = as_the_pod_runs_it(spec, container, f"{KVMINFO} {' '.join(args)} && cat {output}",
                                  writable=(scratch,))
        assert done.returncode == 0, done.stderr
        assert "# +expiry-time=" in done.stdout and "feature.node.kubernetes.io/kvm-info-usable=true" in done.stdout
        assert not list(scratch.iterdir())  # it wrote into the tmpfs "volume", not the read-only root
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_without_the_kvm_resource_a_labeller_cannot_open_kvm(workloads):
    """Why the labellers request devices.kvminfo.io/kvm: a hostPath /dev/kvm alone is refused by the device cgroup."""
    spec = workloads["kvminfo-features-file"]
    (container,) = spec["containers"]
    done = as_the_pod_runs_it(spec, container, f"{KVMINFO} labels --no-libvirt", devices=())
    assert done.returncode == 0
    assert "feature.node.kubernetes.io/kvm-info-usable" not in done.stdout
    assert "permission denied" in done.stderr.lower()


# The plugin's own device cgroup refuses /dev/kvm with EPERM (it was never allocated it):
# that must still count as a present, healthy device, or every slot would be Unhealthy.
def test_device_plugin_sees_kvm_healthy_inside_its_pod(workloads, tmp_path):
    spec = workloads["kvminfo-device-plugin"]
    (container,) = spec["containers"]
    probe = tmp_path / "probe.py"  # the pod runs as root: tmp_path is readable
    probe.write_text("from kvminfo_plugin.devices.health import check_path\n"
                     "health = check_path('/dev/kvm')\nprint(health.healthy, health.reason)\n")
    done = as_the_pod_runs_it(spec, container, f"{sys.executable} {probe}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True"), done.stdout


# -- NodeFeatureRule sample --------------------------------------------------------------------------

def rule_validator() -> jsonschema.Draft202012Validator:
    schema = yaml.safe_load((FIXTURES / "nfd" / "nodefeaturerule-v1alpha1.openapi.yaml").read_text())
    return jsonschema.Draft202012Validator(strict(schema))


VALUE_COUNT = {"Exists": 0, "DoesNotExist": 0, "IsTrue": 0, "IsFalse": 0, "Gt": 1, "Lt": 1, "GtLt": 2}


def expression_matches(expression: dict[str, Any], present: bool, value: str | None) -> bool:
    """NFD's MatchExpression for the operators the sample uses (flags have no value)."""
    op, values = expression["op"], expression.get("value", [])
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if not present:
        return False
    if op in ("IsTrue", "IsFalse"):
        return value == ("true" if op == "IsTrue" else "false")
    if op == "Gt":
        return int(value) > int(values[0])
    if op == "In":
        return value in values
    raise AssertionError(f"operator {op} not evaluated by this test")


def terms_match(terms: list[dict[str, Any]], features: dict[str, Any]) -> bool:
    """NFD's matchFeatures: a logical AND over the terms, each an AND over its expressions."""
    sets = {**features.get("flags", {}), **features.get("attributes", {})}
    for term in terms:
        if term["feature"] not in sets:
            return False  # NFD: "feature ... not available", an error: no label either
        elements = sets[term["feature"]].get("elements", {})
        for name, expression in term["matchExpressions"].items():
            value = elements.get(name)
            if not expression_matches(expression, name in elements, value if isinstance(value, str) else None):
                return False
    return True


def rule_matches(rule: dict[str, Any], features: dict[str, Any]) -> bool:
    """NFD's rule: matchFeatures (if any) and, if given, any one of matchAny's matchFeatures
    (customization-guide.md, "matchFeatures", "matchAny")."""
    return terms_match(rule.get("matchFeatures", []), features) and (
        "matchAny" not in rule or any(terms_match(m["matchFeatures"], features) for m in rule["matchAny"]))


def nfd_kernel_features(modules: list[str], kconfig: dict[str, str]) -> dict[str, Any]:
    """What nfd-worker's kernel source publishes: kernel.loadedmodule (flags: the names in
    /proc/modules) and kernel.config (attributes: CONFIG_X=v as X: v, "y" or "m" kept as is)."""
    return {"flags": {"kernel.loadedmodule": {"elements": {m: {} for m in modules}}},
            "attributes": {"kernel.config": {"elements": kconfig}}}


def this_hosts_kernel_features() -> dict[str, Any]:
    """This machine as nfd-worker's kernel source reads it: /proc/modules (none on a kernel
    without loadable modules), the kernel config from /proc/config.gz, else /boot/config-<release>."""
    modules_file = Path("/proc/modules")
    modules = [line.split()[0] for line in modules_file.read_text().splitlines() if line.strip()] \
        if modules_file.exists() else []
    kconfig: dict[str, str] = {}
    text = ""
    if Path("/proc/config.gz").exists():
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode(errors="replace")
    elif (boot := Path(f"/boot/config-{os.uname().release}")).exists():
        text = boot.read_text(errors="replace")
    if text:
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("CONFIG_"):
                kconfig[key.removeprefix("CONFIG_")] = value
    return nfd_kernel_features(modules, kconfig)


KVM_NODE_CASES = {  # node -> (loaded modules, kernel config, can it have /dev/kvm?)
    "Intel host": (["kvm_intel", "kvm", "irqbypass"], {"KVM": "m", "KVM_INTEL": "m"}, True),
    "AMD host": (["kvm_amd", "kvm", "ccp"], {"KVM": "m", "KVM_AMD": "m"}, True),
    "arm64, KVM built in": (["nvme"], {"KVM": "y"}, True),
    "x86, KVM and its vendor part built in": ([], {"KVM": "y", "KVM_INTEL": "y"}, True),
    "VT-x off: kvm loaded, kvm_intel refused": (["kvm", "irqbypass"], {"KVM": "m", "KVM_INTEL": "m"}, False),
    "a VM without nesting": (["virtio_net"], {"KVM": "m", "KVM_INTEL": "m"}, False),
    "no KVM in the kernel": (["e1000e"], {}, False),
}


def test_labellers_run_only_where_kvm_can_be(built, workloads):
    """Issue 19, 2: each labeller requests devices.kvminfo.io/kvm, so on a node without /dev/kvm
    its pod stayed Pending; they now select the label kvm-nodes' NodeFeatureRule gives, from NFD's
    own raw features, and only where KVM can be. The device plugin needs no NFD: every node."""
    (rule_object,) = by_kind(built["kvm-nodes"], "NodeFeatureRule")
    assert list(rule_validator().iter_errors(rule_object)) == []
    assert by_kind(built[TOP], "NodeFeatureRule") == [rule_object]
    (rule,) = rule_object["spec"]["rules"]
    ((key, value),) = rule["labels"].items()
    assert key.startswith("feature.node.kubernetes.io/")  # NFD's own namespace: no -extra-label-ns needed
    for name in LABELLERS:
        assert workloads[name]["nodeSelector"] == {"kubernetes.io/os": "linux", key: value}, name
    assert key not in workloads["kvminfo-device-plugin"]["nodeSelector"]
    verdicts = {node: rule_matches(rule, nfd_kernel_features(modules, kconfig))
                for node, (modules, kconfig, _) in KVM_NODE_CASES.items()}
    assert verdicts == {node: expected for node, (_, _, expected) in KVM_NODE_CASES.items()}


def test_kvm_node_rule_agrees_with_this_host():
    """This machine, read as nfd-worker reads it: the rule matches exactly when a kvm_intel/kvm_amd
    module is loaded or KVM is built in, and wherever /dev/kvm exists."""
    rule = yaml.safe_load((DEPLOY / "kvm-nodes" / "nodefeaturerule.yaml").read_text())["spec"]["rules"][0]
    features = this_hosts_kernel_features()
    matched = rule_matches(rule, features)
    loaded = features["flags"]["kernel.loadedmodule"]["elements"]
    built_in = features["attributes"]["kernel.config"]["elements"].get("KVM") == "y"
    assert matched == ("kvm_intel" in loaded or "kvm_amd" in loaded or built_in)
    if Path("/dev/kvm").exists() and os.path.exists(f"/sys/dev/char/{os.major(os.stat('/dev/kvm').st_rdev)}:"
                                                     f"{os.minor(os.stat('/dev/kvm').st_rdev)}"):
        assert matched, "this host has a working /dev/kvm but the rule would not select it"


@pytest.fixture(scope="module")
def hyperv_host_features() -> dict[str, Any]:
    """spec.features of a NodeFeature from a real probe of /dev/kvm with a Hyper-V kernel injected."""
    return nodefeature_spec_with(HyperVKernel())


def nodefeature_spec_with(kernel: HyperVKernel) -> dict[str, Any]:
    """The NodeFeature spec of a real probe of /dev/kvm with ``kernel`` answering at the ioctl layer."""
    real = kvm_ioctl.ioctl
    kvm_ioctl.ioctl = kernel
    try:
        report = collect(ProbeOptions(use_libvirt=False))
    finally:
        kvm_ioctl.ioctl = real
    return build_nodefeature(report, "node-1", NAMESPACE)["spec"]


def test_nodefeaturerule_sample_is_valid_and_matches_published_features(built, hyperv_host_features):
    (rule_object,) = by_kind(built["nodefeature"], "NodeFeatureRule")
    assert list(rule_validator().iter_errors(rule_object)) == []
    rules = rule_object["spec"]["rules"]
    for rule in rules:
        for term in rule["matchFeatures"]:
            assert term["feature"] in ("kvminfo.hyperv", "kvminfo.kvm", "kvminfo.libvirt", "kvminfo.cpu_models",
                                       "kvminfo.cpu_features", "kvminfo.host_model_features",
                                       "kvminfo.machine_types", "kvminfo.confidential", "kvminfo.tsc"), term
            for expression in term["matchExpressions"].values():
                if expression["op"] in VALUE_COUNT:
                    assert len(expression.get("value", [])) == VALUE_COUNT[expression["op"]], rule["name"]
    verdicts = {rule["name"]: rule_matches(rule, hyperv_host_features["features"]) for rule in rules}
    max_vcpus = int(hyperv_host_features["features"]["attributes"]["kvminfo.kvm"]["elements"]["max_vcpus"])
    nested = hyperv_host_features["features"]["attributes"]["kvminfo.kvm"]["elements"].get("nested")
    assert verdicts == {"kvminfo-windows-guest-ready": True, "kvminfo-large-vms": max_vcpus > 255,
                        "kvminfo-nested": nested == "true",
                        "kvminfo-sev-snp-guests": False}  # no libvirt asked: nothing says SEV-SNP
    # (tests/test_families_outputs.py evaluates the SEV-SNP rule against a libvirt that offers it)


def test_rule_schema_catches_a_bad_operator(built):
    (rule_object,) = by_kind(built["nodefeature"], "NodeFeatureRule")
    broken = yaml.safe_load(yaml.safe_dump(rule_object))
    broken["spec"]["rules"][0]["matchFeatures"][0]["matchExpressions"]["usable"]["op"] = "Equals"
    assert list(rule_validator().iter_errors(broken))


def test_rule_schema_is_nfd_v0_19s(built):
    """NFD v0.19's CRD accepts Ge, Le, GeLe and the matcher's `type` ('version'); a rule using them
    on the TSC frequency and the libvirt version is valid (and an unknown type field name is not)."""
    (rule_object,) = by_kind(built["nodefeature"], "NodeFeatureRule")
    newer = yaml.safe_load(yaml.safe_dump(rule_object))
    newer["spec"]["rules"][0]["matchFeatures"] = [
        {"feature": "kvminfo.tsc", "matchExpressions": {"frequency_hz": {"op": "Ge", "value": ["2000000000"]}}},
        {"feature": "kvminfo.libvirt", "matchExpressions": {
            "version": {"op": "GeLe", "value": ["9.0.0", "12.5.0"], "type": "version"}}},
        {"feature": "kvminfo.kvm", "matchExpressions": {"max_vcpus": {"op": "Le", "value": ["4096"]}}}]
    assert list(rule_validator().iter_errors(newer)) == []
    newer["spec"]["rules"][0]["matchFeatures"][1]["matchExpressions"]["version"]["kind"] = "version"
    assert list(rule_validator().iter_errors(newer))


def test_cdi_cleanup_removes_the_plugins_specs_as_its_pod_runs(workloads, built, tmp_path):
    """deploy/cleanup: the plugin's own config and CDI dir, the plugin's own --remove-cdi-specs,
    run with the init container's identity against a spec the plugin wrote (CDI mode)."""
    plugin_spec, spec = workloads["kvminfo-device-plugin"], workloads["kvminfo-cleanup"]
    init = init_container(spec, "remove-cdi-specs")
    (config_map,) = by_kind(built["cleanup"], "ConfigMap")
    (plugin_map,) = by_kind(built["device-plugin"], "ConfigMap")
    assert config_map["data"] == plugin_map["data"]  # the same resources, so the same specs
    # its own copy: deleting deploy/cleanup must not delete the running plugin's ConfigMap
    assert config_map["metadata"]["name"] != plugin_map["metadata"]["name"]
    args = plugin_main.build_parser(PLUGIN_SCRIPT).parse_args(init["args"])
    assert init["command"] == [PLUGIN_SCRIPT] and args.remove_cdi_specs
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    plugin_paths = {v["name"]: v["hostPath"]["path"] for v in plugin_spec["volumes"] if "hostPath" in v}
    assert host_paths["cdi"] == plugin_paths["cdi"]
    document = yaml.safe_load(config_map["data"]["device-plugin.yaml"])
    assert {m["mountPath"] for m in init["volumeMounts"]} == {str(Path(args.config).parent), document["cdiDir"]}
    # CDI mode as an operator would switch it on, the spec written by the plugin's own code
    scratch = Path(tempfile.mkdtemp(prefix="kvminfo-cdi."))  # the hostPath: a fresh tmpfs in the pod
    stage = Path(tempfile.mkdtemp(prefix="kvminfo-cdi-stage."))  # what the node's /var/run/cdi holds
    try:
        stage.chmod(0o755)
        document.update(cdiDir=str(scratch))
        document["resources"][0]["cdi"] = True
        config = stage / "device-plugin.yaml"
        config.write_text(yaml.safe_dump(document))
        (resource,) = plugin_config.config_from_mapping(document).resources
        ours = plugin_cdi.spec_path(stage, resource)
        ours.write_bytes(plugin_cdi.encode(plugin_cdi.build_spec(resource)))
        (stage / "vendor.example-gpu.json").write_text('{"cdiVersion": "0.5.0", "kind": "vendor.example/gpu", "devices": []}')
        command = (f"cp {ours} {stage}/vendor.example-gpu.json {scratch}/ && "
                   f"{KVMINFO.with_name(PLUGIN_SCRIPT)} {init['args'][0]} {config} {' '.join(init['args'][2:])} && ls {scratch}")
        done = as_the_pod_runs_it(spec, init, command, writable=(scratch,))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "vendor.example-gpu.json"  # ours gone, someone else's kept
        assert ours.name in done.stdout  # it said what it removed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)


def init_container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec["initContainers"] if c["name"] == name]
    return found


def host_mounts(spec: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """mountPath -> hostPath of a container's hostPath volumes."""
    paths = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
    return {m["mountPath"]: paths[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in paths}


def test_cleanup_removes_the_labellers_host_files_and_nothing_else(workloads, built):
    """Issue 19, 13: the cleanup's init containers, with their own args, remove the feature file
    nfd/'s writer wrote and the relay hook and data nfd/hooks/ installed, each at the host path
    those pods use; a vendor's feature file and hook beside them stay, and so does a file of
    someone else's at our path. A second run finds nothing and says so; both exit 0."""
    spec = workloads["kvminfo-cleanup"]
    remove_file, remove_hook = init_container(spec, "remove-feature-file"), init_container(spec, "remove-relay-hook")
    (writer,) = workloads["kvminfo-features-file"]["containers"]
    relay_spec = workloads["kvminfo-hook-relay"]
    (relay_writer,) = relay_spec["containers"]
    assert host_mounts(spec, remove_file) == host_mounts(workloads["kvminfo-features-file"], writer)
    assert host_mounts(spec, remove_hook) == host_mounts(relay_spec, relay_writer)
    root = Path(tempfile.mkdtemp(prefix="kvminfo-uninstall."))
    try:
        def here(args: list[str]) -> list[str]:
            out = [a.replace("/etc/kubernetes/node-feature-discovery", str(root)) for a in args]
            return one_shot(out) if "--interval" in out else out

        def run(args: list[str]) -> subprocess.CompletedProcess:
            return subprocess.run([str(KVMINFO), *here(args)], capture_output=True, text=True, timeout=60)

        (root / "features.d").mkdir()
        (root / "source.d").mkdir()
        assert run(writer["args"]).returncode == 0
        (config_map,) = by_kind(built["nfd/hooks"], "ConfigMap")
        hook = root / "hook"
        hook.mkdir()
        (hook / "kvminfo").write_text(config_map["data"]["kvminfo"])
        install = init_container(relay_spec, "install-hook")
        script = install["args"][0].replace(SOURCE_D, str(root / "source.d")).replace("/hook/", f"{hook}/")
        assert subprocess.run(install["command"] + [script], timeout=30).returncode == 0
        assert run(relay_writer["args"]).returncode == 0
        (root / "features.d" / "vendor-x").write_text("vendor.example/x=1\n")
        (root / "source.d" / "vendor-hook").write_text("#!/bin/sh\necho vendor.example/y=1\n")
        assert sorted(p.name for p in (root / "source.d").iterdir()) == ["kvminfo", "kvminfo.d", "vendor-hook"]

        for container in (remove_file, remove_hook):
            done = run(container["args"])
            assert done.returncode == 0 and done.stderr == "", done.stderr
            assert done.stdout and all(line.endswith(": removed") for line in done.stdout.splitlines()), done.stdout
        assert sorted(p.name for p in (root / "features.d").iterdir()) == ["vendor-x"]
        assert sorted(p.name for p in (root / "source.d").iterdir()) == ["vendor-hook"]
        again = run(remove_hook["args"])
        assert again.returncode == 0 and "not present" in again.stdout
        (root / "features.d" / "kvminfo").write_text("vendor.example/z=1\n")  # someone else's, at our path
        kept = run(remove_file["args"])
        assert kept.returncode == 0 and "left in place: not written by kvminfo" in kept.stdout
        assert (root / "features.d" / "kvminfo").read_text() == "vendor.example/z=1\n"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_example_pods_select_on_labels_kvminfo_produces(workloads):
    report = collect(ProbeOptions(use_libvirt=False))  # this node, really probed
    labels = build_nodefeature(report, "node-1", NAMESPACE)["spec"]["labels"]  # what NFD puts on the node
    for name in ("kvm-vm-example", "kvm-check"):
        spec = workloads[name]
        affinity = spec.get("affinity", {}).get("nodeAffinity", {})
        for term in affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []):
            wanted = {e["key"]: e["values"] for e in term["matchExpressions"]}  # keys as kvminfo writes them
            assert all(labels.get(key) in values for key, values in wanted.items()), (name, wanted)
        assert spec["restartPolicy"] == "Never"  # a check: it completes
        (container,) = spec["containers"]
        assert container["resources"]["limits"][KVM_RESOURCE] == "1"
        assert not [v for v in spec.get("volumes", []) if "persistentVolumeClaim" in v or "hostPath" in v]



def _required_labels(spec: dict[str, Any]) -> dict[str, list[str]]:
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert all(e["operator"] == "In" for e in term["matchExpressions"]), term
    return {e["key"]: e["values"] for e in term["matchExpressions"]}


def test_windows_guest_pod_selects_the_hyperv_labels_kvminfo_writes(workloads, built, hyperv_host_features):
    """deploy/examples/windows-guest-pod.yaml (docs/vm-pods.md): its affinity names labels kvminfo
    really writes on a Hyper-V capable kernel (injected at the ioctl layer, the real /dev/kvm
    otherwise), the same enlightenments as the NodeFeatureRule's windows-guest-ready rule, and a
    kernel without Hyper-V emulation (KVM_CAP_HYPERV 0) never gets the pod."""
    spec = workloads["kvm-windows-guest"]
    wanted = _required_labels(spec)
    cap = "feature.node.kubernetes.io/kvm-info-cap-hyperv-"
    hyperv = {key.removeprefix(cap) for key in wanted if key.startswith(cap)}
    assert hyperv == {"relaxed", "vapic", "vpindex", "synic", "synictimer", "time"}, hyperv
    assert all(hyperv_host_features["labels"].get(key) in values for key, values in wanted.items()), wanted
    (rule,) = [r for o in by_kind(built["nodefeature"], "NodeFeatureRule") for r in o["spec"]["rules"]
               if r["name"] == "kvminfo-windows-guest-ready"]
    (term,) = [t for t in rule["matchFeatures"] if t["feature"] == "kvminfo.hyperv"]
    assert set(term["matchExpressions"]) == hyperv
    without = nodefeature_spec_with(HyperVKernel(caps={**KVM_HYPERV_CAPS, "KVM_CAP_HYPERV": 0}))["labels"]
    assert without.get("feature.node.kubernetes.io/kvm-info-usable") == "true"
    assert not any(without.get(key) in values for key, values in wanted.items() if key.startswith(cap)), without
    # the container is the VM example's own, so test_example_vm_pod_boots_its_guest_as_the_pod_runs_it runs it
    assert spec["containers"] == workloads["kvm-vm-example"]["containers"]
    assert spec["volumes"] == workloads["kvm-vm-example"]["volumes"]
    assert spec["securityContext"] == workloads["kvm-vm-example"]["securityContext"]


@contextlib.contextmanager
def systemd_kvm_node() -> Iterator[Path]:
    """A directory any uid can read holding ``kvm``: the device node the plugin hands
    over, with a systemd host's mode (0666; this machine's /dev/kvm is 0600)."""
    shared = Path(tempfile.mkdtemp(prefix="kvminfo-dev."))
    try:
        shared.chmod(0o755)
        os.mknod(shared / "kvm", 0o666 | stat.S_IFCHR, os.stat("/dev/kvm").st_rdev)
        (shared / "kvm").chmod(0o666)
        yield shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_example_vm_pod_boots_its_guest_as_the_pod_runs_it(workloads, built):
    """The guest script from the generated ConfigMap runs a real KVM guest as uid 65532 with
    no capabilities, read-only root, and the device cgroup the plugin's allocation makes;
    without the allocation the device cgroup refuses /dev/kvm and it says so in one line."""
    spec = workloads["kvm-vm-example"]
    (container,) = spec["containers"]
    (config_map,) = [o for o in built["examples"] if o["kind"] == "ConfigMap"]
    volume = next(v for v in spec["volumes"] if v["name"] == container["volumeMounts"][0]["name"])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    script = container["command"][-1]
    assert Path(script).parent == Path(container["volumeMounts"][0]["mountPath"])
    with systemd_kvm_node() as shared:
        (shared / Path(script).name).write_text(config_map["data"][Path(script).name])
        command = f"KVM_DEVICE={shared}/kvm {sys.executable} {shared / Path(script).name}"
        done = as_the_pod_runs_it(spec, container, command)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"kvm-vm-example: guest wrote 0x2a to port 0x10 and halted ({shared}/kvm)\n"
        refused = as_the_pod_runs_it(spec, container, command, devices=())
        assert refused.returncode == 1 and refused.stdout == ""
        assert len(refused.stderr.splitlines()) == 1 and "Operation not permitted" in refused.stderr


def test_kvm_check_pod_opens_kvm_only_when_allocated(workloads):
    """The Verify section's checker, run with this machine's POSIX sh as its pod runs it."""
    spec = workloads["kvm-check"]
    (container,) = spec["containers"]
    # kvminfo's own image (Issue 19, 14: no pull from Docker Hub, nothing to mirror when air-gapped)
    assert container["command"][:2] == ["/bin/sh", "-c"] and container["image"] == IMAGE
    with systemd_kvm_node() as shared:
        (shared / "check.sh").write_text(container["args"][0].replace("/dev/kvm", f"{shared}/kvm"))
        done = as_the_pod_runs_it(spec, container, f"/bin/sh {shared}/check.sh")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout == f"kvm-check: {shared}/kvm opened read-write as uid 65534\n"
        refused = as_the_pod_runs_it(spec, container, f"/bin/sh {shared}/check.sh", devices=())
        assert refused.returncode == 1
        assert refused.stdout.endswith("cannot be opened (device cgroup or file mode)\n")


# -- the NFD relay hook, run for real -----------------------------------------------------------------

@pytest.fixture
def hook_dir(built, tmp_path) -> Path:
    (config_map,) = by_kind(built["nfd/hooks"], "ConfigMap")
    hook = tmp_path / "source.d" / "kvminfo"
    hook.parent.mkdir()
    hook.write_text(config_map["data"]["kvminfo"])
    hook.chmod(0o755)
    (hook.parent / "kvminfo.d").mkdir()
    return hook.parent


def run_hook(hook_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(hook_dir / "kvminfo")], capture_output=True, text=True, timeout=10,
                          cwd="/", env={"PATH": "/usr/bin:/bin"})


def test_relay_hook_prints_what_the_writer_wrote(hook_dir):
    written = subprocess.run([str(KVMINFO), "features-file", "--output", str(hook_dir / "kvminfo.d" / "labels"),
                              "--no-libvirt"], capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr
    labels = subprocess.run([str(KVMINFO), "labels", "--no-libvirt"], capture_output=True, text=True, timeout=60)
    done = run_hook(hook_dir)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == labels.stdout and done.stdout  # no comments, no expiry directive, same lines
    assert (hook_dir / "kvminfo.d").is_dir()  # a directory: NFD runs regular files only


def test_relay_hook_refuses_expired_data(hook_dir):
    expired = datetime.now(UTC) - timedelta(seconds=5)
    (hook_dir / "kvminfo.d" / "labels").write_bytes(render_feature_file({"feature.node.kubernetes.io/kvm-info-usable": "true"}, expired))
    done = run_hook(hook_dir)
    assert done.returncode == 0 and done.stdout == ""
    assert "expired at" in done.stderr and len(done.stderr.splitlines()) == 1
    fresh = datetime.now(UTC) + timedelta(minutes=5)
    (hook_dir / "kvminfo.d" / "labels").write_bytes(render_feature_file({"feature.node.kubernetes.io/kvm-info-usable": "true"}, fresh))
    assert run_hook(hook_dir).stdout == "feature.node.kubernetes.io/kvm-info-usable=true\n"


def test_relay_hook_without_data_says_why(hook_dir):
    done = run_hook(hook_dir)
    assert done.returncode == 0 and done.stdout == ""
    assert "missing or unreadable" in done.stderr and "kvminfo-hook-relay" in done.stderr


SOURCE_D = "/etc/kubernetes/node-feature-discovery/source.d"
NFD_WORKER_UID = "65534"  # the user NFD's images run nfd-worker (and so the hooks) as


def test_hook_relay_pod_end_to_end_as_the_nfd_worker_user(workloads, built):
    """The init container's own script installs the hook, the writer's own args
    fill its data, and the hook runs as NFD's unprivileged worker user."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed: cannot run the hook as another user")
    spec = workloads["kvminfo-hook-relay"]
    root = Path(tempfile.mkdtemp(prefix="kvminfo-nfd."))  # not tmp_path: its parents are 0700
    try:
        root.chmod(0o755)
        source_d, hook_volume = root / "source.d", root / "hook"
        source_d.mkdir()  # the hostPath (DirectoryOrCreate)
        hook_volume.mkdir()
        (config_map,) = by_kind(built["nfd/hooks"], "ConfigMap")
        for key, text in config_map["data"].items():
            (hook_volume / key).write_text(text)
        (init,) = spec["initContainers"]
        script = init["args"][0].replace(SOURCE_D, str(source_d)).replace("/hook/", f"{hook_volume}/")
        installed = subprocess.run(init["command"] + [script], capture_output=True, text=True, timeout=30)
        assert installed.returncode == 0, installed.stderr
        assert sorted(p.name for p in source_d.iterdir()) == ["kvminfo", "kvminfo.d"]  # no temp file left
        assert (source_d / "kvminfo").stat().st_mode & 0o777 == 0o755

        (writer,) = spec["containers"]
        args = one_shot([a.replace(SOURCE_D, str(source_d)) for a in writer["args"]])  # once, not a loop
        written = subprocess.run([str(KVMINFO), *args], capture_output=True, text=True, timeout=60)
        assert written.returncode == 0, written.stderr

        relayed = subprocess.run(["setpriv", "--reuid", NFD_WORKER_UID, "--regid", NFD_WORKER_UID, "--clear-groups",
                                  str(source_d / "kvminfo")], capture_output=True, text=True, timeout=10,
                                 cwd="/", env={"PATH": "/usr/bin:/bin"})
        labels = subprocess.run([str(KVMINFO), "labels", "--no-libvirt"], capture_output=True, text=True, timeout=60)
        assert relayed.returncode == 0 and relayed.stderr == "", relayed.stderr
        assert relayed.stdout == labels.stdout and relayed.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- Dockerfile ---------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, joined = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        joined += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            keyword, _, rest = joined.strip().partition(" ")
            lines.append((keyword.upper(), rest))
            joined = ""
    return lines


def dockerfile_stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Each stage's name: (what it starts FROM, its instructions after the FROM), in file order."""
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            parent, _, name = rest.partition(" AS ")
            stages[name] = (parent, [])
        elif stages:
            stages[list(stages)[-1]][1].append((keyword, rest))
    return stages


def test_dockerfile_is_multi_stage_non_root_and_copies_the_packages():
    stages = dockerfile_stages()
    # build (compilers); settings (what both images say about themselves); plugin-root (base + venv);
    # full-root (plus libvirt and QEMU, trimmed); the images plugin and full (the default: the last
    # stage) are a root tree copied into settings as one layer, so what a trim deletes leaves the image
    assert list(stages) == ["build", "settings", "plugin-root", "plugin", "full-root", "full"]
    assert stages["settings"][0] == "scratch"
    assert stages["plugin-root"][0] == stages["build"][0] == "${PYTHON_IMAGE}"
    assert stages["full-root"][0] == "plugin-root"
    for image, root in (("plugin", "plugin-root"), ("full", "full-root")):
        parent, body = stages[image]
        assert parent == "settings" and [i for i in body if i[0] in ("COPY", "RUN", "USER")] == [
            ("COPY", f"--from={root} / /")], body
    # a COPY into an empty stage keeps no setting of the base image: settings states them
    settings = stages["settings"][1]
    env = " ".join(rest for keyword, rest in settings if keyword == "ENV")
    assert "PATH=/opt/kvminfo/bin:" in env and "PYTHONDONTWRITEBYTECODE=1" in env, env  # read-only root
    user = [rest for keyword, rest in settings if keyword == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")  # both images' user
    assert ("ENTRYPOINT", '["kvminfo"]') in settings
    # the default image: tini as PID 1 reaps what libvirt daemonizes (its QEMU probe); a new
    # ENTRYPOINT drops the inherited CMD, so it names its own
    full = stages["full"][1]
    assert [rest for keyword, rest in full if keyword == "ENTRYPOINT"] == ['["tini", "--", "kvminfo"]']
    assert ("CMD", '["--help"]') in full
    assert ("COPY", "--from=build /opt/kvminfo /opt/kvminfo") in stages["plugin-root"][1]
    runtime = stages["plugin-root"][1] + stages["full-root"][1]
    assert not [rest for keyword, rest in runtime if keyword == "RUN" and ("gcc" in rest or "-dev " in rest)]
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    # a user record for the pods' uid, and what the embedded libvirt needs (Debian's QEMU user)
    assert "useradd --uid 65532" in runs and "useradd --system --gid libvirt-qemu" in runs
    assert "libvirt-daemon-driver-qemu" in runs and "qemu-system-x86" in runs and "--no-install-recommends" in runs
    # the trims end with a check that fails the build if a program or library left misses a library
    check = [rest for keyword, rest in stages["full-root"][1] if keyword == "RUN"][-1]
    assert "ldd" in check and "not found" in check and "exit 1" in check, check
    # bytecode that stays valid whatever a COPY does to mtimes (the root is read-only: no rewrite)
    build = stages["build"][1]
    build_runs = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "compileall" in build_runs and "--invalidation-mode unchecked-hash /opt/kvminfo" in build_runs
    copied = {rest.split()[0] for keyword, rest in build if keyword == "COPY"}
    pyproject = (REPO / "pyproject.toml").read_text()
    for package_dir in ("kvminfo", "plugin"):
        assert package_dir in copied and f'"{package_dir}"' in pyproject
    for source in copied:
        assert (REPO / source).exists(), source
