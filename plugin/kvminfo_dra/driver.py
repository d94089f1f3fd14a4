"""The DRA driver's run: probe -> devices -> CDI spec -> gRPC sockets -> registration -> slices,
then keep all of it current until SIGTERM.

Sockets (FACTS.md section 1): the registration socket in ``<root>/plugins_registry/`` (the
kubelet's plugin watcher finds it there) and the DRA socket in ``<root>/plugins/<driver>/``.
With an ``instance`` (the pod UID in deploy/dra) both names carry it, so two pods of a
rolling DaemonSet update are two plugins to the kubelet (it tells them apart by endpoint
and calls the newest connected one), never one socket taken from the other.

Slices are (re)published at start, on every successful (re)registration (the kubelet
wipes a driver's slices at its own start and 30 s after the driver's last plugin goes),
and when the facts change: a full probe every ``probe_interval_s`` (which also writes
back a slice someone else deleted or changed), and at once when a device node appears
or goes (checked every ``health_interval_s``). On SIGTERM the
sockets go and the slices stay: the next instance republishes them, or the kubelet
wipes them. ``uninstall`` removes slices and CDI spec.
"""

from __future__ import annotations

import logging
import os
import socket as sockets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from kvminfo_dra.apiserver import ApiError, ResourceApi
from kvminfo_dra.attributes import DRIVER, kvm_attributes
from kvminfo_dra.claims import Prepared, prepare_claim
from kvminfo_dra.devices import CDI_KIND, Device, build_slices, node_devices
from kvminfo_dra.pool import SlicePublisher
from kvminfo_dra.services import HealthBoard, RegistrationService, dra_server, registration_server
from kvminfo_dra.upstream import (
    DeviceGroup,
    KvminfoError,
    ProbeOptions,
    Report,
    ResourceConfig,
    SpecKeeper,
    collect,
    options_for_families,
    remove_specs,
)
from kvminfo_dra.validation import check_slices

log = logging.getLogger(__name__)

# The families whose facts become attributes (kvminfo.labels.FAMILIES).
FAMILIES = ("caps", "cpu-models", "confidential", "tsc", "limits")
# Devices published when present: name -> (kind, path)
MAX_UNIX_SOCKET_PATH = 107  # sun_path is 108 bytes with the final NUL
DEFAULT_OTHERS = {"tun": ("tun", "/dev/net/tun"), "vhost-net": ("vhost-net", "/dev/vhost-net")}


@dataclass(frozen=True)
class DriverConfig:
    node: str
    kubelet_root: Path = Path("/var/lib/kubelet")
    cdi_dir: Path = Path("/var/run/cdi")
    kvm_path: str = "/dev/kvm"
    instance: str = ""  # distinct socket names per pod (rolling updates)
    exclusive: int = 0  # 0: one shared kvm device; N: kvm-0..kvm-N-1
    others: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_OTHERS))
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    probe_interval_s: float = 60.0
    health_interval_s: float = 5.0
    retry_s: float = 5.0

    @property
    def suffix(self) -> str:
        return f"-{self.instance}" if self.instance else ""

    @property
    def registration_socket(self) -> Path:
        return self.kubelet_root / "plugins_registry" / f"{DRIVER}{self.suffix}-reg.sock"

    @property
    def dra_socket(self) -> Path:
        return self.kubelet_root / "plugins" / DRIVER / f"dra{self.suffix}.sock"


def probe_devices(config: DriverConfig, collect_report: Callable[[ProbeOptions], Report] = collect) -> tuple[Device, ...]:
    """The devices this node has now: the kvm device only when its node exists."""
    present = {name: spec for name, spec in config.others.items() if os.path.exists(spec[1])}
    attributes = None
    if os.path.exists(config.kvm_path):
        options = options_for_families(replace(config.probe, kvm_path=config.kvm_path), FAMILIES)
        attributes = kvm_attributes(collect_report(options))
    return node_devices(attributes, present, config.exclusive)


def cdi_resource(devices: tuple[Device, ...]) -> ResourceConfig:
    """Our CDI spec (kind kvm.kvminfo.io/device): one CDI device per distinct cdi_device."""
    groups = {d.cdi_device: d.paths for d in devices}
    return ResourceConfig(name=CDI_KIND, groups=tuple(DeviceGroup(n, p) for n, p in groups.items()), cdi=True,
                          cdi_kind=CDI_KIND)


def remove_dead_sockets(config: DriverConfig) -> list[Path]:
    """Sockets of earlier instances of this driver that nobody serves any more (a pod that was
    killed, a node that rebooted): the kubelet would keep trying them. A socket that still
    accepts (the old pod of a rolling update) stays. Returns what was removed."""
    candidates = [*config.registration_socket.parent.glob(f"{DRIVER}*-reg.sock"),
                  *config.dra_socket.parent.glob("dra*.sock")]
    removed = []
    for path in candidates:
        if path in (config.registration_socket, config.dra_socket):
            continue
        probe = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            _unlink(path)
            removed.append(path)
        except OSError:
            pass  # not ours to judge (permissions, not a socket)
        finally:
            probe.close()
    return removed


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class Driver:
    def __init__(self, config: DriverConfig, api: ResourceApi,
                 collect_report: Callable[[ProbeOptions], Report] = collect) -> None:
        self.config = config
        self.api = api
        self.publisher = SlicePublisher(api, config.node)
        self.board = HealthBoard(config.node)
        self._collect = collect_report
        self._lock = threading.Lock()
        self._devices: tuple[Device, ...] = ()
        self._spec_problem = ""
        self._keeper: SpecKeeper | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._republish = True
        self.refused = ""  # the kubelet's reason when it refused our registration
        self.on_refused: Callable[[], None] = lambda: None
        self._servers: list[grpc.Server] = []
        self._thread: threading.Thread | None = None

    # -- devices and facts --------------------------------------------------------------------------
    @property
    def devices(self) -> dict[str, Device]:
        with self._lock:
            return {d.name: d for d in self._devices}

    def _set_devices(self, devices: tuple[Device, ...], starting: bool = False) -> bool:
        """Adopt ``devices``; True when they differ from before. The CDI spec follows."""
        with self._lock:
            if devices == self._devices and not starting:
                return False
            self._devices = devices
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        self._start_keeper()
        return True

    def _start_keeper(self) -> None:
        """Write our CDI spec and keep it; a KvminfoError (one line) when it cannot be written,
        and meanwhile the devices are UNHEALTHY and prepare refuses (the run loop retries)."""
        keeper = SpecKeeper(self.config.cdi_dir, (cdi_resource(tuple(self.devices.values())),),
                            self.config.health_interval_s, on_state=self._on_spec_state)
        try:
            keeper.start()
        except KvminfoError as err:
            self._spec_problem = str(err)
            self._update_health()
            raise
        self._keeper = keeper
        self._spec_problem = ""
        self._update_health()

    def _on_spec_state(self, _resource: ResourceConfig, problem: str) -> None:
        self._spec_problem = problem
        self._update_health()

    def _update_health(self) -> None:
        health: dict[str, tuple[bool | None, str]] = {}
        for device in self.devices.values():
            missing = [p for p in device.paths if not os.path.exists(p)]
            if missing:
                health[device.name] = (False, f"{', '.join(missing)} is gone")
            elif self._spec_problem:
                health[device.name] = (False, self._spec_problem)
            else:
                health[device.name] = (True, "")
        self.board.set_all(health)

    # -- prepare ------------------------------------------------------------------------------------
    def prepare_one(self, namespace: str, name: str, uid: str) -> list[Prepared]:
        claim = self.api.read_claim(namespace, name)
        prepared = prepare_claim(claim, uid, DRIVER, self.config.node, self.devices)
        if self._spec_problem:
            raise KvminfoError(f"ResourceClaim {namespace}/{name}: our CDI spec is not written: {self._spec_problem}")
        return prepared

    def unprepare_one(self, namespace: str, name: str, uid: str) -> None:
        """Nothing to undo: the CDI spec is shared by every claim and stays (module docstring)."""

    # -- registration -------------------------------------------------------------------------------
    def _on_registration(self, registered: bool, error: str) -> None:
        if registered:
            log.info("the kubelet registered driver %s (%s)", DRIVER, self.config.dra_socket)
            self.refused = ""
            self._registered.set()
            self._republish = True
            self._wake.set()
        else:
            self.refused = error or "no reason given"
            log.error("the kubelet refused driver %s: %s", DRIVER, self.refused)
            self.on_refused()

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> Driver:
        for socket in (self.config.dra_socket, self.config.registration_socket):
            if len(str(socket)) > MAX_UNIX_SOCKET_PATH:
                raise KvminfoError(f"{socket}: longer than {MAX_UNIX_SOCKET_PATH} characters, the limit of a unix "
                                   "socket path (sun_path); use a shorter --kubelet-root or --instance")
        devices = probe_devices(self.config, self._collect)
        check_slices(build_slices(self.config.node, 1, devices))  # refuse at start what the server would
        self._set_devices(devices, starting=True)
        dra_socket, reg_socket = self.config.dra_socket, self.config.registration_socket
        for directory in (dra_socket.parent, reg_socket.parent):
            directory.mkdir(parents=True, exist_ok=True)
        for dead in remove_dead_sockets(self.config):
            log.info("removed %s: a socket of an earlier instance that nobody serves", dead)
        _unlink(dra_socket)
        server = dra_server(self.prepare_one, self.unprepare_one, self.board)
        server.add_insecure_port(f"unix://{dra_socket}")
        server.start()
        self._servers.append(server)
        _unlink(reg_socket)
        # Served under a dot name first (the plugin watcher ignores those), then renamed: the
        # kubelet must never find the socket before it answers GetInfo.
        hidden = reg_socket.with_name(f".{reg_socket.name}")
        _unlink(hidden)
        registration = registration_server(RegistrationService(DRIVER, str(dra_socket), self._on_registration))
        registration.add_insecure_port(f"unix://{hidden}")
        registration.start()
        self._servers.append(registration)
        os.rename(hidden, reg_socket)  # the socket appears: the kubelet's plugin watcher calls GetInfo
        log.info("serving %s on %s; registration socket %s", DRIVER, dra_socket, reg_socket)
        self._thread = threading.Thread(target=self._run, name="dra-driver", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        probe_due = time.monotonic() + self.config.probe_interval_s
        while not self._stop.is_set():
            if self._republish:
                try:
                    self.publisher.publish(tuple(self.devices.values()))
                    self._republish = False
                except KvminfoError as err:
                    log.warning("%s; retrying in %.0f s", err, self.config.retry_s)
            self._wake.wait(self.config.retry_s if self._republish else self.config.health_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._keeper is None:
                try:
                    self._start_keeper()
                except KvminfoError:
                    pass  # said by the health stream and every prepare
            self._update_health()
            if self._nodes_changed() or time.monotonic() >= probe_due:
                probe_due = time.monotonic() + self.config.probe_interval_s
                self.refresh()
                # Resync: a slice deleted or changed by someone else (an admin, a kubelet's
                # start-up wipe racing our first publish) is written again; publish() only
                # lists when nothing differs.
                self._republish = True

    def _nodes_changed(self) -> bool:
        present = {name for name, (_kind, path) in self.config.others.items() if os.path.exists(path)}
        had = {d.name for d in self.devices.values() if d.kind != "kvm"}
        has_kvm = any(d.kind == "kvm" for d in self.devices.values())
        return present != had or os.path.exists(self.config.kvm_path) != has_kvm

    def refresh(self) -> bool:
        """Probe again; a change of devices or facts is a new pool generation. True when changed."""
        try:
            devices = probe_devices(self.config, self._collect)
            check_slices(build_slices(self.config.node, 1, devices))
        except KvminfoError as err:
            log.warning("re-probe: %s; keeping the devices published", err)
            return False
        try:
            changed = self._set_devices(devices)
        except KvminfoError as err:  # the CDI spec: UNHEALTHY and prepare refuses until the run loop writes it
            log.warning("%s", err)
            changed = True
        if changed:
            log.info("the node's devices or facts changed: publishing a new pool generation")
            self._republish = True
            self._wake.set()
        return changed

    def wait_registered(self, timeout: float) -> bool:
        return self._registered.wait(timeout)

    def stop(self) -> None:
        """Registration socket first (the kubelet deregisters us), then the DRA socket. Slices stay.
        A second call does nothing."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        for server, socket in zip(reversed(self._servers), (self.config.registration_socket, self.config.dra_socket),
                                  strict=False):
            server.stop(grace=1).wait(2)
            _unlink(socket)
        self._servers.clear()
        self.board.close()
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None


def uninstall(config: DriverConfig, api: ResourceApi) -> list[str]:
    """Delete this node's slices and our CDI spec (only where it is ours); one line each."""
    lines = []
    try:
        count = SlicePublisher(api, config.node).remove()
        lines.append(f"deleted {count} ResourceSlice(s) of {DRIVER} on node {config.node}")
    except ApiError as err:
        raise KvminfoError(f"uninstall: {err}") from None
    lines += remove_specs(config.cdi_dir, (cdi_resource(()),))
    return lines


