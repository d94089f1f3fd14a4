"""Run each DaemonSet container of deploy/ from the imported image, under
containerd + runc, with its pod's security context, and check it does its job.

Used by `scripts/image.sh run` (after `build` and `import`). Needs root, a
containerd serving ``--address`` (scripts/image.sh starts one of its own) with
the image in namespace k8s.io, `ctr`, `runc` and `kubectl` (kustomize).

How a pod becomes an OCI runtime spec here, as containerd's CRI plugin builds
one for the kubelet (containerd pkg/cri/opts/spec_linux.go; Kubernetes
"Configure a Security Context"):
- base: the spec `ctr` generates for the image with containerd's default
  seccomp profile (what seccompProfile RuntimeDefault selects), its masked and
  read-only /proc paths and runc's default device allowlist;
- process: image ENTRYPOINT + container ``args`` (or ``command`` + ``args``),
  image env + container env (downward API fieldRefs resolved), uid/gid from
  ``runAsUser``/``runAsGroup`` (container over pod), ``supplementalGroups``,
  ``noNewPrivileges`` = not ``allowPrivilegeEscalation``, capabilities:
  containerd's default set minus ``drop`` (``ALL``: none at all) plus ``add``;
- root: a writable snapshot of the image (mount points for volumes are made
  in it, as with CRI) remounted read-only when ``readOnlyRootFilesystem``;
- volumes: hostPath -> a bind mount of a scratch directory standing in for
  the host path (never the host's own /etc/kubernetes or /var/lib/kubelet),
  except /dev (and /dev/kvm), which is the real one; a /dev mount drops the
  default mounts under /dev, as containerd's WithMounts does; configMap -> its data
  written to a scratch directory, bound read-only; emptyDir -> a scratch
  directory of mode 0777, as the kubelet makes it; the service-account token
  -> token, ca.crt and namespace of the API server stand-in;
- extended resources (``devices.kvminfo.io/kvm``): the device plugin's real
  Allocate answer, fetched through tests/kubelet_emulator.py from the plugin
  container started first, turned into linux.devices plus device cgroup
  rules the way containerd's WithDevices does (the host node's mode; this
  VM's /dev/kvm is 0600, a systemd host's is 0666, which the publisher, uid
  65532, relies on: ``--systemd-kvm-mode`` gives the node 0666 as there);
- limits: memory and CPU from ``resources.limits``.
Each labeller asks the image's own libvirt (qemu:///embed, its cache in an
emptyDir): its labels must hold the host-model CPU, equal to what this
machine's libvirt (virsh on qemu:///system, when it answers) says.
Deviations, all for the network only: the publisher joins the host's network
namespace to reach the stand-in on 127.0.0.1 (in a cluster: the Service IP).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the kubelet emulator and API server stand-in

NAMESPACE = "kvminfo"
NODE_NAME = "node-1"
KVM_RESOURCE = "devices.kvminfo.io/kvm"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CDI_DIR = "/var/run/cdi"  # the device plugin's cdiDir (deploy/device-plugin/config)
# containerd's default capability set for a container (oci.defaultUnixCaps), what `drop` removes from
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


# NFD's default label namespace: every kvminfo label key is fully qualified.
LABEL_PREFIX = "feature.node.kubernetes.io/"
USABLE = LABEL_PREFIX + "kvm-info-usable"
HOST_MODEL = LABEL_PREFIX + "kvm-info-host-model"
CPU_MODEL = LABEL_PREFIX + "kvm-info-cpu-model-"


def load_json(text: str) -> Any:
    return json.loads(text)


def label_lines(text: str) -> dict[str, str]:
    """NFD feature-file lines ``name=value`` ('#' lines are directives such as the expiry)."""
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def host_libvirt_host_model() -> str | None:
    """This machine's host-model CPU as its own libvirt says it (virsh on qemu:///system, read
    with ElementTree, libvirt's formatdomaincaps.rst), to hold the pods' labels against; None
    when no system libvirt answers (the labels then only have to be there)."""
    import xml.etree.ElementTree as ET

    try:
        done = subprocess.run(["virsh", "-c", "qemu:///system", "domcapabilities", "--virttype", "kvm"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return ET.fromstring(done.stdout).findtext("cpu/mode[@name='host-model']/model")


def libvirt_labels(where: str, labels: dict[str, str], expected_host_model: str | None) -> dict[str, Any]:
    """What the pod's embedded libvirt put among ``labels``: the host-model label (libvirt's
    own word, equal to the host libvirt's when there is one) and the CPU-model labels."""
    if labels.get(USABLE) != "true":
        raise Fail(f"{where}: {USABLE} is {labels.get(USABLE)!r}")
    host_model = labels.get(HOST_MODEL)
    if host_model is None:
        raise Fail(f"{where}: no {HOST_MODEL} label: the embedded libvirt did not answer (see its log)")
    if expected_host_model is not None and host_model != expected_host_model:
        raise Fail(f"{where}: {HOST_MODEL}={host_model}, but this host's libvirt says {expected_host_model}")
    models = sorted(k.removeprefix(CPU_MODEL) for k in labels if k.startswith(CPU_MODEL))
    return {"host_model": host_model, "cpu_model_labels": models, "labels": len(labels)}


class Fail(Exception):
    """One line: what did not work."""


@dataclass
class Ctr:
    address: str
    image: str
    scratch: Path
    namespace: str = "k8s.io"
    _base: dict[str, Any] | None = None
    _entrypoint: list[str] = field(default_factory=list)

    def cmd(self, *args: str) -> list[str]:
        return ["ctr", "-a", self.address, "-n", self.namespace, *args]

    def run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise Fail(f"ctr {' '.join(args[:3])}: {done.stderr.strip().splitlines()[-1:]}")
        return done.stdout

    def image_config(self) -> dict[str, Any]:
        """The image's OCI config (ENTRYPOINT, CMD, ...), read from containerd's content store."""
        for line in self.run("images", "ls").splitlines()[1:]:
            ref, _, digest = line.split()[:3]
            if ref == self.image:
                manifest = load_json(self.run("content", "get", digest))
                return load_json(self.run("content", "get", manifest["config"]["digest"]))["config"]
        raise Fail(f"{self.image} is not in containerd's {self.namespace} namespace: run 'scripts/image.sh import'")

    def base_spec(self) -> tuple[dict[str, Any], list[str]]:
        """containerd's spec for this image (default seccomp, read-only root) and the image's ENTRYPOINT."""
        if self._base is None:
            self._entrypoint = self.image_config().get("Entrypoint") or []
            probe = f"kvminfo-spec-probe-{os.getpid()}"
            self.run("containers", "create", "--seccomp", "--read-only", self.image, probe)
            try:
                info = load_json(self.run("containers", "info", probe))
            finally:
                self.run("containers", "rm", probe)
            self._base = info["Spec"]
        return json.loads(json.dumps(self._base)), list(self._entrypoint)

    @contextmanager
    def rootfs(self, name: str) -> Iterator[Path]:
        target = self.scratch / "rootfs" / name
        target.mkdir(parents=True)
        self.run("images", "mount", "--rw", self.image, str(target))
        try:
            yield target
        finally:
            subprocess.run(self.cmd("images", "unmount", "--rm", str(target)), capture_output=True, timeout=60)


@dataclass
class Started:
    name: str
    process: subprocess.Popen
    t0: float
    log: Path
    peak_mib: float | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Pod:
    """One pod template from the rendered manifests, and the scratch "host" it runs on."""

    workload: str
    spec: dict[str, Any]
    config_maps: dict[str, dict[str, str]]
    host: Path  # scratch directory standing in for the node's filesystem
    systemd_kvm_mode: bool = False
    pod_name: str = ""
    pod_uid: str = ""

    def host_path(self, path: str) -> Path:
        return self.host / path.lstrip("/")

    def security(self, container: dict[str, Any]) -> dict[str, Any]:
        pod, own = self.spec.get("securityContext", {}), container.get("securityContext", {})
        merged = {k: v for k, v in pod.items() if k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")}
        merged.update(own)
        merged["supplementalGroups"] = pod.get("supplementalGroups", [])
        return merged


def field_ref(pod: Pod, path: str) -> str:
    values = {"spec.nodeName": NODE_NAME, "metadata.namespace": NAMESPACE, "metadata.name": pod.pod_name,
              "metadata.uid": pod.pod_uid, "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default")}
    if path not in values:
        raise Fail(f"{pod.workload}: downward API field {path} not emulated")
    return values[path]


def device_entries(allocation: Any, systemd_kvm_mode: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """linux.devices and device cgroup rules for a ContainerAllocateResponse's DeviceSpecs (containerd WithDevices)."""
    devices, rules = [], []
    for spec in allocation.devices:
        st = os.stat(spec.host_path)
        if not stat.S_ISCHR(st.st_mode):
            raise Fail(f"allocated {spec.host_path} is not a character device")
        mode = 0o666 if systemd_kvm_mode and spec.host_path == "/dev/kvm" else stat.S_IMODE(st.st_mode)
        devices.append({"path": spec.container_path, "type": "c", "major": os.major(st.st_rdev),
                        "minor": os.minor(st.st_rdev), "fileMode": mode, "uid": st.st_uid, "gid": st.st_gid})
        rules.append({"allow": True, "type": "c", "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                      "access": spec.permissions})
    return devices, rules


def cdi_entries(names: list[str], cdi_dir: Path, systemd_kvm_mode: bool
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str], list[dict[str, Any]]]:
    """What a CDI-enabled runtime (containerd >= 1.7 with enable_cdi, CRI-O) injects for
    fully qualified names ``vendor/class=name``: the named device's containerEdits and the
    spec-wide ones, read from the spec files in ``cdi_dir`` (CDI spec: deviceNodes get
    type/major/minor from the host node when left out, env "K=V", mounts)."""
    specs = {}
    for path in sorted(cdi_dir.glob("*.json")) + sorted(cdi_dir.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())  # JSON is YAML
        specs[spec["kind"]] = spec
    devices, rules, env, mounts = [], [], {}, []
    for qualified in names:
        kind, _, name = qualified.partition("=")
        spec = specs.get(kind)
        device = next((d for d in (spec or {}).get("devices", []) if d["name"] == name), None)
        if device is None:
            raise Fail(f"CDI name {qualified}: no such device in the specs in {cdi_dir} (unresolvable: the runtime "
                       "would refuse to create the container)")
        for edits in (spec.get("containerEdits") or {}, device.get("containerEdits") or {}):
            for node in edits.get("deviceNodes") or []:
                st = os.stat(node.get("hostPath", node["path"]))
                mode = 0o666 if systemd_kvm_mode and node["path"] == "/dev/kvm" else stat.S_IMODE(st.st_mode)
                major, minor = node.get("major", os.major(st.st_rdev)), node.get("minor", os.minor(st.st_rdev))
                devices.append({"path": node["path"], "type": node.get("type", "c"), "major": major, "minor": minor,
                                "fileMode": node.get("fileMode", mode), "uid": node.get("uid", st.st_uid),
                                "gid": node.get("gid", st.st_gid)})
                rules.append({"allow": True, "type": node.get("type", "c"), "major": major, "minor": minor,
                              "access": node.get("permissions", "rwm")})
            env.update(e.split("=", 1) for e in edits.get("env") or [])
            mounts += [{"destination": m["containerPath"], "type": m.get("type", "bind"), "source": m["hostPath"],
                        "options": m.get("options", ["rbind"])} for m in edits.get("mounts") or []]
    return devices, rules, env, mounts


def quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(float(value[:-len(unit)]) * factor)
    return int(value)


def cpu_quota(value: str, period: int = 100_000) -> int:
    cores = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
    return max(1000, int(cores * period))


def container_spec(ctr: Ctr, pod: Pod, container: dict[str, Any], allocation: Any = None,
                   extra_env: dict[str, str] | None = None, host_network: bool = False) -> dict[str, Any]:
    spec, entrypoint = ctr.base_spec()
    process = spec["process"]
    sc = pod.security(container)
    # command/args: Kubernetes "Define a Command and Arguments for a Container"
    process["args"] = (container["command"] + container.get("args", [])) if "command" in container \
        else entrypoint + container.get("args", [])
    env = dict(e.split("=", 1) for e in process["env"])
    for entry in container.get("env", []):
        env[entry["name"]] = entry["value"] if "value" in entry else field_ref(pod, entry["valueFrom"]["fieldRef"]["fieldPath"])
    if allocation is not None:
        env.update(allocation.envs)
    env.update(extra_env or {})
    process["env"] = [f"{k}={v}" for k, v in env.items()]
    uid = sc.get("runAsUser", process["user"]["uid"])
    gid = sc.get("runAsGroup", process["user"]["gid"] if "runAsUser" not in sc else 0)
    if sc.get("runAsNonRoot") and uid == 0:
        raise Fail(f"{container['name']}: runAsNonRoot with uid 0 (the kubelet refuses to start it)")
    process["user"] = {"uid": uid, "gid": gid, "additionalGids": sorted({gid, *sc["supplementalGroups"]})}
    process["noNewPrivileges"] = not sc.get("allowPrivilegeEscalation", True)
    caps = sc.get("capabilities", {})
    drop = set(caps.get("drop", []))
    keep = [] if "ALL" in drop else [c for c in DEFAULT_CAPS if c.removeprefix("CAP_") not in drop]
    keep += [f"CAP_{c}" for c in caps.get("add", [])]
    process["capabilities"] = {k: list(keep) for k in ("bounding", "effective", "permitted")}
    process["capabilities"].update(inheritable=[], ambient=[])
    if sc.get("privileged"):
        raise Fail(f"{container['name']}: privileged containers are not emulated")
    seccomp = (sc.get("seccompProfile") or {}).get("type", "Unconfined")
    if seccomp == "Unconfined":
        spec["linux"].pop("seccomp", None)
    elif seccomp != "RuntimeDefault":
        raise Fail(f"{container['name']}: seccompProfile {seccomp} not emulated")
    spec["root"]["readonly"] = bool(sc.get("readOnlyRootFilesystem"))
    spec["hostname"] = NODE_NAME if host_network else pod.pod_name[:63]
    # volumes
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        source = volume_source(pod, volume)
        options = ["rbind", "ro" if mount.get("readOnly") else "rw"]
        if mount["mountPath"] == "/dev":  # containerd's WithMounts: a supplied /dev drops the default ones under it
            spec["mounts"] = [m for m in spec["mounts"] if not (m["destination"] + "/").startswith("/dev/")]
        spec["mounts"].append({"destination": mount["mountPath"], "type": "bind", "source": str(source),
                               "options": options})
    if pod.spec.get("automountServiceAccountToken", True) and (pod.host / "serviceaccount").exists():
        spec["mounts"].append({"destination": SA_DIR, "type": "bind", "source": str(pod.host / "serviceaccount"),
                               "options": ["rbind", "ro"]})
    # devices from the device plugin's Allocate
    if allocation is not None:
        devices, rules = device_entries(allocation, pod.systemd_kvm_mode)
        if allocation.cdi_devices:
            cdi_devices, cdi_rules, cdi_env, cdi_mounts = cdi_entries(
                [d.name for d in allocation.cdi_devices], pod.host_path(CDI_DIR), pod.systemd_kvm_mode)
            # CDI's ContainerEdits.Apply: an injected node or mount replaces the entry with the
            # same container path (the plugin also sends DeviceSpecs for runtimes without CDI),
            # an env entry the one of the same name
            paths = {d["path"] for d in cdi_devices}
            devices = [d for d in devices if d["path"] not in paths] + cdi_devices
            rules += cdi_rules
            process["env"] = [e for e in process["env"] if e.split("=", 1)[0] not in cdi_env] + \
                [f"{k}={v}" for k, v in cdi_env.items()]
            targets = {m["destination"] for m in cdi_mounts}
            spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in targets] + cdi_mounts
        spec["linux"].setdefault("devices", []).extend(devices)
        spec["linux"]["resources"]["devices"].extend(rules)
        for m in allocation.mounts:
            spec["mounts"].append({"destination": m.container_path, "type": "bind", "source": m.host_path,
                                   "options": ["rbind", "ro" if m.read_only else "rw"]})
    limits = container.get("resources", {}).get("limits", {})
    resources = spec["linux"]["resources"]
    if "memory" in limits and not os.environ.get("KVMINFO_PODS_NO_MEMORY_LIMIT"):
        resources["memory"] = {"limit": quantity_bytes(limits["memory"])}
    if "cpu" in limits and not os.environ.get("KVMINFO_PODS_NO_CPU_LIMIT"):
        resources["cpu"] = {"quota": cpu_quota(limits["cpu"]), "period": 100_000}
    if host_network:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    return spec


def volume_source(pod: Pod, volume: dict[str, Any]) -> Path:
    if "hostPath" in volume:
        path, kind = volume["hostPath"]["path"], volume["hostPath"].get("type", "")
        if kind == "CharDevice":
            if not stat.S_ISCHR(os.stat(path).st_mode):
                raise Fail(f"hostPath {path} (CharDevice) is not a character device here")
            return Path(path)  # the real node: /dev/kvm
        if path == "/dev":
            return Path(path)  # the real /dev (device plugin: /dev/kvm is the real node in it)
        where = pod.host_path(path)
        if kind == "Directory" and not where.is_dir():
            raise Fail(f"hostPath {path} (Directory) does not exist on the node; the pod would not start")
        where.mkdir(parents=True, exist_ok=True, mode=0o755)  # DirectoryOrCreate: 0755 root, as the kubelet makes it
        return where
    if "emptyDir" in volume:  # the kubelet makes it 0777, for any uid of the pod; each pod its own
        where = pod.host / "emptydir" / pod.workload / volume["name"]
        where.mkdir(parents=True, exist_ok=True)
        where.chmod(0o777)
        return where
    if "configMap" in volume:
        data = pod.config_maps[volume["configMap"]["name"]]
        where = pod.host / "configmaps" / volume["name"]
        where.mkdir(parents=True, exist_ok=True)
        for key, value in data.items():
            (where / key).write_text(value)
            (where / key).chmod(0o644)  # the kubelet's default volume mode 0644
        return where
    raise Fail(f"volume {volume['name']}: source {sorted(volume)} not emulated")


@dataclass
class Runner:
    ctr: Ctr
    work: Path
    stack: ExitStack
    started: list[Started] = field(default_factory=list)

    def start(self, pod: Pod, container: dict[str, Any], **kwargs: Any) -> Started:
        name = f"kvminfo-{container['name']}-{os.getpid()}-{len(self.started)}"
        spec = container_spec(self.ctr, pod, container, **kwargs)
        root = self.stack.enter_context(self.ctr.rootfs(name))
        spec["root"]["path"] = str(root)
        spec["linux"]["cgroupsPath"] = f"/{self.ctr.namespace}/{name}"  # its own cgroup: its own limits
        spec_file = self.work / f"{name}.json"
        spec_file.write_text(json.dumps(spec, indent=1))
        log = self.work / f"{name}.log"
        t0 = time.monotonic()
        with open(log, "wb") as out:
            process = subprocess.Popen(self.ctr.cmd("run", "--rm", "--config", str(spec_file), name),
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        started = Started(name, process, t0, log)
        self.started.append(started)
        self.stack.callback(self.stop, started)
        return started

    def peak_memory_mib(self, started: Started) -> float | None:
        """The container cgroup's peak memory use (cgroup v1 max_usage_in_bytes, v2 memory.peak), while it runs."""
        group = f"{self.ctr.namespace}/{started.name}"
        for path in (Path("/sys/fs/cgroup/memory") / group / "memory.max_usage_in_bytes",
                     Path("/sys/fs/cgroup") / group / "memory.peak"):
            try:
                return round(int(path.read_text()) / 2**20, 1)
            except (OSError, ValueError):
                continue
        return None

    def stop(self, started: Started, sig: str = "SIGTERM", timeout: float = 20) -> tuple[int, float]:
        """SIGTERM as the kubelet sends it; (exit code, seconds to exit)."""
        if started.process.poll() is not None:
            return started.process.returncode, 0.0
        started.peak_mib = self.peak_memory_mib(started)
        t0 = time.monotonic()
        subprocess.run(self.ctr.cmd("tasks", "kill", "-s", sig, started.name), capture_output=True, timeout=30)
        try:
            code = started.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(self.ctr.cmd("tasks", "kill", "-s", "SIGKILL", started.name), capture_output=True, timeout=30)
            code = started.process.wait(timeout=30)
        return code, time.monotonic() - t0

    def exec(self, started: Started, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.ctr.cmd("tasks", "exec", "--exec-id", f"probe-{time.monotonic_ns()}",
                                           started.name, *args), capture_output=True, text=True, timeout=60)

    def wait(self, started: Started, timeout: float = 60) -> int:
        try:
            return started.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail(f"{started.name} did not exit within {timeout:.0f} s: {started.output()[-300:]}") from None


def wait_until(predicate: Any, timeout: float, what: str, started: Started | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if started is not None and started.process.poll() is not None:
            raise Fail(f"{what}: the container exited ({started.process.returncode}): {started.output()[-400:]}")
        time.sleep(0.05)
    raise Fail(f"{what}: not within {timeout:.0f} s" + (f": {started.output()[-400:]}" if started else ""))


def render(part: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        raise Fail("kubectl not found: it renders deploy/ (kubectl kustomize)")
    done = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy" / part)], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise Fail(f"kubectl kustomize deploy/{part}: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def pod_of(objects: list[dict[str, Any]], workload: str, host: Path, systemd_kvm_mode: bool) -> Pod:
    """A DaemonSet's pod template, or a bare Pod, by name."""
    (obj,) = [o for o in objects if o["kind"] in ("DaemonSet", "Pod") and o["metadata"]["name"] == workload]
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "DaemonSet" else obj["spec"]
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    return Pod(workload, spec, maps, host, systemd_kvm_mode,
               pod_name=f"{workload}-x7k2p" if obj["kind"] == "DaemonSet" else workload,
               pod_uid="8d3c1f0e-5b6a-4c2d-9e8f-1a2b3c4d5e6f")


# -- each mode's job ---------------------------------------------------------------------------------

def run_device_plugin(runner: Runner, host: Path, report: dict[str, Any], cdi: bool) -> Any:
    from kubelet_emulator import KubeletEmulator

    pod = pod_of(render("device-plugin"), "kvminfo-device-plugin", host, False)
    if cdi:  # as an operator switches it on: cdi: true for every resource in the ConfigMap
        (config_map,) = pod.config_maps.values()
        document = yaml.safe_load(config_map["device-plugin.yaml"])
        for resource in document["resources"]:
            resource["cdi"] = True
        if document.get("cdiDir", CDI_DIR) != CDI_DIR:
            raise Fail(f"cdiDir {document['cdiDir']} is not {CDI_DIR}")
        config_map["device-plugin.yaml"] = yaml.safe_dump(document)
    plugin_dir = pod.host_path("/var/lib/kubelet/device-plugins")
    plugin_dir.mkdir(parents=True)
    kubelet = KubeletEmulator(plugin_dir).start()
    runner.stack.callback(kubelet.stop)
    (container,) = pod.spec["containers"]
    started = runner.start(pod, container)
    kubelet.wait_registered(KVM_RESOURCE, timeout_s=60)
    registered = time.monotonic() - started.t0
    health = kubelet.wait_health(KVM_RESOURCE, lambda devices: len(devices) > 0
                                 and all(h == "Healthy" for h in devices.values()), timeout_s=30)
    probe = container["livenessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
    healthz = runner.exec(started, "python3", "-c", "import urllib.request, sys; "
                          f"r = urllib.request.urlopen('http://127.0.0.1:{port}{probe['path']}', timeout=5); "
                          "print(r.status)")
    if healthz.stdout.strip() != "200":
        raise Fail(f"device plugin /healthz: {healthz.stdout.strip()} {healthz.stderr.strip()[-200:]}")
    allocation = kubelet.admit(KVM_RESOURCE, 1)
    report["device-plugin"] = {
        "mode": "CDI" if cdi else "device specs", "start_to_registered_s": round(registered, 3), "devices_healthy": len(health),
        "healthz": 200, "allocate": [f"{d.host_path}->{d.container_path} {d.permissions}" for d in allocation.devices]
        + [f"cdi {c.name}" for c in allocation.cdi_devices],
        "uid": container["securityContext"]["runAsUser"], "read_only_root": True, "capabilities": [],
        "memory_limit": container["resources"]["limits"]["memory"]}
    return Plugin(kubelet, started)


@dataclass
class Plugin:
    """The running device plugin container and the kubelet emulator it registered with."""

    kubelet: Any
    started: Started
    expected_host_model: str | None = None  # this host's libvirt's host-model CPU, when it has one

    def admit(self) -> Any:
        """The plugin's Allocate answer for one container asking for one kvm device."""
        try:
            return self.kubelet.admit(KVM_RESOURCE, 1)
        except Exception as err:  # grpc errors: say whether the plugin container is still there
            state = self.started.process.poll()
            raise Fail(f"Allocate failed ({type(err).__name__}); plugin container "
                       f"{'running' if state is None else f'exited {state}'}: {self.started.output()[-300:]}") from None


def run_features_file(runner: Runner, host: Path, plugin: Plugin, report: dict[str, Any]) -> None:
    pod = pod_of(render("nfd"), "kvminfo-features-file", host, False)
    (container,) = pod.spec["containers"]
    output = container["args"][container["args"].index("--output") + 1]
    written = pod.host_path(output)
    started = runner.start(pod, container, allocation=plugin.admit())
    text = wait_until(lambda: written.exists() and written.read_text(), 180, "nfd feature file", started)
    took = time.monotonic() - started.t0
    code, stop_s = runner.stop(started)
    if "# +expiry-time=" not in text:
        raise Fail(f"feature file without its expiry: {text[:300]!r}")
    libvirt = libvirt_labels("nfd feature file", label_lines(text), plugin.expected_host_model)
    if code != 0:
        raise Fail(f"features-file exited {code} on SIGTERM: {started.output()[-300:]}")
    report["nfd"] = {"start_to_file_written_s": round(took, 3), "peak_memory_mib": started.peak_mib,
                     "memory_limit": container["resources"]["limits"]["memory"], "libvirt": libvirt,
                     "sigterm_exit": code, "sigterm_to_exit_s": round(stop_s, 3)}


def run_hooks(runner: Runner, host: Path, plugin: Plugin, report: dict[str, Any]) -> None:
    objects = render("nfd/hooks")
    pod = pod_of(objects, "kvminfo-hook-relay", host, False)
    (init,) = pod.spec["initContainers"]
    (container,) = pod.spec["containers"]
    started = runner.start(pod, init)
    code = runner.wait(started)
    hook = pod.host_path("/etc/kubernetes/node-feature-discovery/source.d/kvminfo")
    if code != 0 or not hook.exists() or stat.S_IMODE(hook.stat().st_mode) != 0o755:
        raise Fail(f"install-hook exited {code}; hook {'present' if hook.exists() else 'missing'}: "
                   f"{started.output()[-300:]}")
    init_s = time.monotonic() - started.t0
    output = container["args"][container["args"].index("--output") + 1]
    data = pod.host_path(output)
    started = runner.start(pod, container, allocation=plugin.admit())
    wait_until(lambda: data.exists() and data.stat().st_size > 0, 180, "hook relay data", started)
    took = time.monotonic() - started.t0
    # nfd-worker runs the hook with its own image's /bin/sh (the -full image is Debian, like ours)
    nfd = {"name": "nfd-worker-hook-run", "args": ["/etc/kubernetes/node-feature-discovery/source.d/kvminfo"],
           "command": [], "securityContext": {"runAsUser": 0, "readOnlyRootFilesystem": True,
                                              "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
           "volumeMounts": [{"name": "source-d", "mountPath": "/etc/kubernetes/node-feature-discovery/source.d",
                             "readOnly": True}]}
    relay = runner.start(pod, nfd)
    runner.wait(relay)
    relayed = relay.output()
    code, stop_s = runner.stop(started)
    if relay.process.returncode != 0 or "#" in relayed:
        raise Fail(f"relay hook printed {relayed[:300]!r} (exit {relay.process.returncode})")
    libvirt = libvirt_labels("relay hook", label_lines(relayed), plugin.expected_host_model)
    report["nfd/hooks"] = {"install_hook_s": round(init_s, 3), "start_to_data_written_s": round(took, 3),
                           "peak_memory_mib": started.peak_mib,
                           "libvirt": libvirt, "sigterm_exit": code,
                           "sigterm_to_exit_s": round(stop_s, 3)}


def run_publisher(runner: Runner, host: Path, plugin: Plugin, report: dict[str, Any]) -> None:
    from apiserver_standin import TOKEN, ApiServerStandin, self_signed_certificate

    objects = render("nodefeature")
    pod = pod_of(objects, "kvminfo-publish", host, systemd_kvm_mode=True)
    sa = host / "serviceaccount"
    sa.mkdir(parents=True)
    cert, key = self_signed_certificate(sa)
    server = ApiServerStandin(tls=(cert, key)).start()
    runner.stack.callback(server.stop)
    key.unlink()  # the pod gets the CA, never the key
    cert.rename(sa / "ca.crt")
    (sa / "token").write_text(TOKEN)
    (sa / "namespace").write_text(NAMESPACE)
    for f in sa.iterdir():
        f.chmod(0o644)
    # the pod as the DaemonSet controller made it: the publisher reads it for its owner
    pod.pod_uid = server.add_daemonset_pod(NAMESPACE, pod.workload, pod.pod_name)["metadata"]["uid"]
    (container,) = pod.spec["containers"]
    host_ip, port = server.address
    started = runner.start(pod, container, allocation=plugin.admit(), host_network=True,
                           extra_env={"KUBERNETES_SERVICE_HOST": host_ip, "KUBERNETES_SERVICE_PORT": str(port)})
    name = f"kvminfo-{NODE_NAME}"
    stored = wait_until(lambda: server.get_object(NAMESPACE, name), 180, "NodeFeature object", started)
    took = time.monotonic() - started.t0
    code, stop_s = runner.stop(started)
    libvirt = libvirt_labels(f"NodeFeature {name}", stored["spec"]["labels"], plugin.expected_host_model)
    if code != 0:
        raise Fail(f"publish exited {code} on SIGTERM: {started.output()[-300:]}")
    owners = stored["metadata"].get("ownerReferences", [])
    if [(o["kind"], o["name"]) for o in owners] != [("DaemonSet", pod.workload)]:
        raise Fail(f"NodeFeature {name}: owner references {owners}, want the DaemonSet {pod.workload}")
    # uninstall: the DaemonSet is deleted, the garbage collector (emulated by the stand-in) takes the object
    collected = server.delete_owner("apps/v1", "DaemonSet", NAMESPACE, pod.workload)
    report["nodefeature"] = {"start_to_published_s": round(took, 3), "libvirt": libvirt,
                             "peak_memory_mib": started.peak_mib,
                             "memory_limit": container["resources"]["limits"]["memory"],
                             "owner_references": owners, "deleted_with_daemonset": collected,
                             "sigterm_exit": code, "sigterm_to_exit_s": round(stop_s, 3)}


def run_example(runner: Runner, host: Path, plugin: Plugin, report: dict[str, Any]) -> None:
    """deploy/examples' VM pod: a tiny KVM guest as uid 65532 with the plugin's allocation."""
    pod = pod_of(render("examples"), "kvm-vm-example", host, systemd_kvm_mode=True)
    (container,) = pod.spec["containers"]
    started = runner.start(pod, container, allocation=plugin.admit())
    code = runner.wait(started)
    took = time.monotonic() - started.t0
    if code != 0 or "halted" not in started.output():
        raise Fail(f"kvm-vm-example exited {code}: {started.output()[-300:]}")
    report["examples"] = {"vm_pod_run_s": round(took, 3), "said": started.output().strip()}


def run_cleanup(runner: Runner, host: Path, report: dict[str, Any], cdi: bool) -> None:
    """deploy/cleanup's init container after the plugin is gone: the CDI specs go (CDI mode) or nothing."""
    pod = pod_of(render("cleanup"), "kvminfo-cleanup", host, False)
    if cdi:
        (config_map,) = pod.config_maps.values()
        document = yaml.safe_load(config_map["device-plugin.yaml"])
        for resource in document["resources"]:
            resource["cdi"] = True
        config_map["device-plugin.yaml"] = yaml.safe_dump(document)
    specs = sorted(p.name for p in pod.host_path(CDI_DIR).glob("*.json"))
    (init,) = [c for c in pod.spec["initContainers"] if c["name"] == "remove-cdi-specs"]
    started = runner.start(pod, init)
    code = runner.wait(started)
    left = sorted(p.name for p in pod.host_path(CDI_DIR).glob("*.json"))
    if code != 0 or left:
        raise Fail(f"cdi cleanup exited {code}, left {left}: {started.output()[-300:]}")
    report["cleanup"] = {"cdi_specs_before": specs, "cdi_specs_after": left,
                         "said": started.output().strip().splitlines()[-1:]}


def run_floor(runner: Runner, host: Path, report: dict[str, Any], version: str, commit: str | None) -> None:
    """The runtime's own cost: the image's `kvminfo --version` under the same spec path; and
    both programs name the build: ``PROG VERSION (commit COMMIT)``, the commit the image was
    built from (``--commit``, what scripts/image.sh passed as KVMINFO_COMMIT)."""
    pod = Pod("floor", {}, {}, host)
    times = []
    said = {}
    for program in ("kvminfo", "kvminfo", "kvminfo", "kvminfo-device-plugin"):
        started = runner.start(pod, {"name": "floor", "command": [program], "args": ["--version"]})
        if runner.wait(started) != 0:
            raise Fail(f"{program} --version: {started.output()[-200:]}")
        times.append(time.monotonic() - started.t0)
        said[program] = started.output().strip()
        want = f"{program} {version} (commit {commit or ''}"
        if not said[program].startswith(want) or not said[program].endswith(")"):
            raise Fail(f"{program} --version said {said[program]!r}, want {want}...)")
    report["floor"] = {"kvminfo_version_run_s": sorted(times[:3])[1], "version": said}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="containerd socket")
    parser.add_argument("--image", required=True)
    parser.add_argument("--work", type=Path, required=True, help="scratch directory (a fresh one is made in it)")
    parser.add_argument("--report", type=Path, help="write the figures here as JSON")
    parser.add_argument("--version", required=True, help="the release the image holds (pyproject.toml)")
    parser.add_argument("--commit", help="the commit the image was built from (KVMINFO_COMMIT); "
                                         "without it, any commit is accepted")
    parser.add_argument("--cdi", action="store_true",
                        help="device plugin in CDI mode (cdi: true); the CDI names are resolved from its spec as a "
                             "CDI-enabled runtime does, and deploy/cleanup removes the spec afterwards")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("image_pods: needs root (containerd, runc, device cgroups)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pods.", dir=args.work))
    # The node's filesystem stand-in: a short path, as unix socket paths are
    # limited to 107 bytes (the plugin's socket lives under it).
    host = Path(tempfile.mkdtemp(prefix="kvminfo-node."))
    host.chmod(0o755)
    report: dict[str, Any] = {"image": args.image, "loadavg_1m_start": os.getloadavg()[0]}
    try:
        with ExitStack() as stack:
            runner = Runner(Ctr(args.address, args.image, work), work, stack)
            run_floor(runner, host, report, args.version, args.commit)
            plugin = run_device_plugin(runner, host, report, args.cdi)
            plugin.expected_host_model = report["host_libvirt_host_model"] = host_libvirt_host_model()
            run_features_file(runner, host, plugin, report)
            run_hooks(runner, host, plugin, report)
            run_publisher(runner, host, plugin, report)
            run_example(runner, host, plugin, report)
            # after it served every other pod's Allocate
            report["device-plugin"]["peak_memory_mib"] = runner.peak_memory_mib(plugin.started)
            code, _ = runner.stop(plugin.started)  # uninstall: the DaemonSet goes, then the cleanup runs
            if code != 0:
                raise Fail(f"device plugin exited {code} on SIGTERM: {plugin.started.output()[-300:]}")
            run_cleanup(runner, host, report, args.cdi)
    except (Fail, AssertionError) as err:  # AssertionError: the kubelet emulator's timeouts
        print(f"image_pods: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(host, ignore_errors=True)
        report["loadavg_1m_end"] = os.getloadavg()[0]
        print(json.dumps(report, indent=1))
        if args.report:
            args.report.write_text(json.dumps(report, indent=1) + "\n")
    return 0  # the specs and logs stay in the work directory for inspection


if __name__ == "__main__":
    sys.exit(main())
