"""Is a device node present and usable by the pods it is allocated to? And a
monitor that re-checks the nodes on every inotify event and on a slow poll.

What a pod gets is the host node's major:minor (runc/crun stat the host path
and create the same node in the container; a CDI runtime does the same from
the spec). So a node is usable when it is a character device the kernel has a
driver for. That is answered without opening it: the driver core publishes
every registered character device as ``/sys/dev/char/<major>:<minor>``
(Documentation/ABI/stable/sysfs-dev). Not opening matters: open() on a serial
port raises DTR (resetting boards such as Arduinos), an exclusive device
(TIOCEXCL tty, /dev/tpm0, a VFIO group) held by our check would make the
workload's own open() fail with EBUSY, and inside the plugin's own pod the
device cgroup answers EPERM anyway.

Without a sysfs entry the kernel is asked before any open(), from sources that
are host-wide and that no device cgroup confines: ``/proc/devices`` lists every
registered character major (fs/proc/devices.c: the majors of the char device
regions, "Character devices:" then "<major> <name>" lines), and for the misc
major 10 (Documentation/admin-guide/devices.txt) ``/proc/misc`` lists every
registered minor (drivers/char/misc.c: "<minor> <name>"). A node whose major
(or misc minor) is not there has no driver: unhealthy. That is what
``/dev/vhost-net`` made at boot by kmod's static nodes with vhost_net not
loaded looks like (10:238), or a static ``/dev/kvm`` (10:232) on a host with
VT-x/AMD-V off, where kvm never registers its misc device; on the host open()
answers ENODEV (misc_open) or ENXIO (chrdev_open), but in our pod the device
cgroup answers EPERM first, which cannot tell them apart. Only nodes the
kernel lists without a sysfs entry (pty slaves in devpts, or a sysfs that is
not mounted) are opened, and there EBUSY (held by its workload) and EPERM (our
own device cgroup) both mean present. When the /proc files cannot be read, the
open() decides alone.

inotify on each node's directory wakes the checker at once (devtmpfs and
tmpfs both deliver CREATE/DELETE/ATTRIB); the slow poll catches what inotify
cannot show (a driver unloaded behind an unchanged node, a directory that did
not exist at start).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kvminfo.common.threads import Worker
from kvminfo_plugin.devices.dirwatch import Change, DirectoryWatcher, DirEvent
from kvminfo_plugin.telemetry.logs import errno_text

log = logging.getLogger(__name__)

SYS_DEV_CHAR = "/sys/dev/char"
PROC_DEVICES = "/proc/devices"
PROC_MISC = "/proc/misc"
MISC_MAJOR = 10  # Documentation/admin-guide/devices.txt: "10 char  Non-serial mice, misc features"


@dataclass(frozen=True, slots=True)
class PathHealth:
    path: str
    healthy: bool
    reason: str  # a short phrase for the log line: "char 10:232", "missing", "no driver (ENXIO)"


def check_path(path: str, permissions: str = "rw", sys_dev_char: str = SYS_DEV_CHAR,
               proc_devices: str = PROC_DEVICES, proc_misc: str = PROC_MISC) -> PathHealth:
    """Health of one device node; see the module docstring for the rule."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return PathHealth(path, False, "missing")
    except OSError as err:
        return PathHealth(path, False, f"stat failed: {errno_text(err)}")
    if not stat.S_ISCHR(st.st_mode):
        return PathHealth(path, False, "not a character device")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    numbers = f"{major}:{minor}"
    if os.path.exists(f"{sys_dev_char}/{numbers}"):
        return PathHealth(path, True, f"char {numbers}")
    missing = _unregistered(major, minor, proc_devices, proc_misc)
    if missing is not None:
        return PathHealth(path, False, f"no driver for char {numbers} ({missing})")
    return _check_by_open(path, permissions, numbers)


def char_majors(proc_devices_text: str) -> set[int]:
    """The majors of the "Character devices:" section of /proc/devices."""
    majors: set[int] = set()
    in_char = False
    for line in proc_devices_text.splitlines():
        if line.endswith(":"):  # a section heading: "Character devices:", "Block devices:"
            in_char = line.strip() == "Character devices:"
        elif in_char and (fields := line.split()) and fields[0].isdigit():
            majors.add(int(fields[0]))
    return majors


def misc_minors(proc_misc_text: str) -> set[int]:
    """The minors /proc/misc lists (one "<minor> <name>" line per misc device)."""
    return {int(fields[0]) for line in proc_misc_text.splitlines()
            if (fields := line.split()) and fields[0].isdigit()}


def _unregistered(major: int, minor: int, proc_devices: str, proc_misc: str) -> str | None:
    """Why the kernel has no driver for char major:minor, or None (it has one, or we cannot tell)."""
    try:
        if major not in char_majors(_read(proc_devices)):
            return f"major {major} not in {proc_devices}"
        if major != MISC_MAJOR:
            return None
        minors = misc_minors(_read(proc_misc))
    except OSError:
        return None  # no /proc to ask: the open() decides
    return None if minor in minors else f"misc minor {minor} not in {proc_misc}: its driver is not loaded or found no hardware"


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _check_by_open(path: str, permissions: str, numbers: str) -> PathHealth:
    flags = os.O_RDWR if "w" in permissions and "r" in permissions else os.O_WRONLY if "w" in permissions else os.O_RDONLY
    try:
        # O_NONBLOCK: a tty-like node must not block the check; O_NOCTTY: never become its controlling tty.
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        if err.errno == errno.EBUSY:  # an exclusive device held by its workload
            return PathHealth(path, True, f"char {numbers}, in use (EBUSY)")
        if err.errno == errno.EPERM:
            # The device cgroup of our own non-privileged pod refuses nodes it was not
            # allocated; the kernel checked the node (a char device, present) before that,
            # and pods that are allocated it get it through their own cgroup rule.
            return PathHealth(path, True, f"char {numbers}, not openable here (EPERM)")
        if err.errno in (errno.ENXIO, errno.ENODEV):
            return PathHealth(path, False, f"no driver for char {numbers} ({errno.errorcode[err.errno]})")
        return PathHealth(path, False, f"cannot open: {errno_text(err)}")
    os.close(fd)
    return PathHealth(path, True, f"char {numbers}")


OnChange = Callable[[PathHealth], None]


class HealthMonitor:
    """Checks ``paths`` (path -> permissions) on every inotify event and, when
    ``poll_interval_s`` is given, every ``poll_interval_s`` in its own thread;
    calls ``on_change`` for each path whose health flipped. With
    ``poll_interval_s=None`` the thread waits for inotify only and the owner calls
    ``check_all()`` on its own schedule (the device plugin's supervisor does, on
    its own slow poll: one thread wakes per interval instead of two)."""

    def __init__(self, paths: dict[str, str], on_change: OnChange, poll_interval_s: float | None) -> None:
        self._paths = dict(paths)
        self._on_change = on_change
        self._poll_interval_s = poll_interval_s
        self._names = {os.path.basename(p) for p in self._paths}
        self._wake = threading.Event()
        self._checking = threading.Lock()  # check_all from the inotify thread and the owner's poll
        self.current: dict[str, PathHealth] = {p: check_path(p, perm) for p, perm in self._paths.items()}
        self._watcher = DirectoryWatcher(sorted({os.path.dirname(p) for p in self._paths}), self._on_event, "health-inotify")
        self._worker = Worker("health", self._run, wake=self._wake.set)

    def start(self) -> HealthMonitor:
        self._watcher.start()
        self._worker.start()
        return self

    def stop(self) -> None:
        self._worker.stop()
        self._watcher.stop()

    def _on_event(self, event: DirEvent) -> None:
        # Name-less events (the directory itself changed or went away) concern every path in it.
        if event.change is Change.RESCAN or event.name in self._names:
            self._wake.set()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self._wake.wait(self._poll_interval_s)  # None: until an inotify event or stop
            self._wake.clear()
            if not stopping.is_set():
                self.check_all()

    def check_all(self) -> None:
        """Check every path now; safe from any thread (one check at a time)."""
        with self._checking:
            for path, permissions in self._paths.items():
                now = check_path(path, permissions)
                if now.healthy != self.current[path].healthy:
                    self.current[path] = now
                    self._on_change(now)
