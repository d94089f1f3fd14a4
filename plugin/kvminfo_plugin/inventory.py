"""Device nodes -> slot IDs, and the health of each device node.

A shared node like /dev/kvm is advertised as N slots ("devices" to the
kubelet) that all map to the same path; when the path goes bad, all its
slots turn Unhealthy together.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass

from kvminfo_plugin.config import ResourceConfig

MAX_DEVICE_ID = 63  # the kubelet's limit on Device.ID


@dataclass(frozen=True)
class PathHealth:
    path: str
    healthy: bool
    reason: str  # "ok" or why not, for the log line


def path_slug(path: str) -> str:
    """/dev/net/tun -> dev-net-tun: a stable, readable prefix for slot IDs and CDI names."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "root"
    budget = MAX_DEVICE_ID - 7  # room for "-" + 5 digits + margin
    if len(slug) > budget:  # keep IDs within 63 chars, unique, and ending in the node's own name
        digest = hashlib.sha256(path.encode()).hexdigest()[:8]
        slug = f"{digest}-{slug[-(budget - 9):].lstrip('-')}"
    return slug


@dataclass(frozen=True)
class Inventory:
    """The slots of one resource: ID -> device path, in advertising order."""

    resource: str
    path_of: dict[str, str]  # slot ID -> device path

    @classmethod
    def for_resource(cls, resource: ResourceConfig) -> Inventory:
        width = len(str(resource.slots - 1))
        path_of: dict[str, str] = {}
        for path in resource.devices:
            slug = path_slug(path)
            for index in range(resource.slots):
                path_of[f"{slug}-{index:0{width}d}"] = path
        if len(path_of) != len(resource.devices) * resource.slots:
            raise ValueError(f"{resource.name}: two device paths give the same slot IDs")
        return cls(resource=resource.name, path_of=path_of)

    @property
    def ids(self) -> list[str]:
        return list(self.path_of)

    def unknown(self, ids: list[str]) -> list[str]:
        return [i for i in ids if i not in self.path_of]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.path_of.values()))

    def paths_for(self, ids: list[str]) -> list[str]:
        """Distinct device paths behind ``ids``, in config order (slots share one node)."""
        wanted = {self.path_of[i] for i in ids}
        if len(wanted) == 1:  # the common case (one node, e.g. /dev/kvm): no scan on the Allocate path
            return list(wanted)
        return [p for p in self.paths if p in wanted]


def check_path(path: str, permissions: str = "rw") -> PathHealth:
    """Healthy = exists, is a character device, and opens with the access the pods get
    (or is refused only by our own device cgroup, EPERM)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return PathHealth(path, False, "missing")
    except OSError as err:
        return PathHealth(path, False, f"stat failed: {err.strerror}")
    if not stat.S_ISCHR(st.st_mode):
        return PathHealth(path, False, "not a character device")
    flags = os.O_RDWR if "w" in permissions and "r" in permissions else os.O_WRONLY if "w" in permissions else os.O_RDONLY
    try:
        # O_NONBLOCK: a tty-like node must not block the health check.
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        if err.errno == errno.ENXIO:
            return PathHealth(path, False, "no driver behind the node (ENXIO)")
        if err.errno == errno.EPERM:
            # The device cgroup of our own non-privileged pod refuses nodes it was not
            # allocated; the kernel checked the node (a char device, present) before that,
            # and pods that are allocated it get it through their own cgroup rule.
            return PathHealth(path, True, "ok (present; this container may not open it: EPERM)")
        return PathHealth(path, False, f"cannot open: {err.strerror}")
    os.close(fd)
    return PathHealth(path, True, "ok")
