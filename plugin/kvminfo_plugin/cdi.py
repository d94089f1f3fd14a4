"""CDI spec for a resource: what the container runtime injects for each
fully qualified name (vendor/class=name) that Allocate returns.

One CDI device per device group (slots of /dev/kvm all resolve to the same
group). Written as JSON, which is also YAML, so every CDI reader accepts it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from kvminfo.output.atomic import write_atomic
from kvminfo_plugin.config import DeviceGroup, ResourceConfig

log = logging.getLogger(__name__)

# 0.5.0 has everything used here (deviceNodes with permissions, mounts, env)
# and is read by containerd >= 1.7 and CRI-O >= 1.23.
CDI_VERSION = "0.5.0"


def qualified_name(resource: ResourceConfig, group: DeviceGroup) -> str:
    """``vendor/class=name``: what Allocate answers for ``group``."""
    return f"{resource.effective_cdi_kind}={group.name}"


def build_spec(resource: ResourceConfig) -> dict[str, Any]:
    """Pure: the spec's content."""
    spec: dict[str, Any] = {
        "cdiVersion": CDI_VERSION,
        "kind": resource.effective_cdi_kind,
        "devices": [
            {"name": group.name,
             "containerEdits": {"deviceNodes": [{"path": path, "permissions": resource.permissions} for path in group.paths]}}
            for group in resource.groups
        ],
    }
    common: dict[str, Any] = {}
    if resource.envs:
        common["env"] = [f"{k}={v}" for k, v in resource.envs]
    if resource.mounts:
        common["mounts"] = [{"hostPath": m.host_path, "containerPath": m.container_path,
                             "options": ["ro" if m.read_only else "rw", "bind"]} for m in resource.mounts]
    if common:
        spec["containerEdits"] = common
    return spec


def spec_path(cdi_dir: Path, resource: ResourceConfig) -> Path:
    # The CDI convention: <vendor>-<class>.json, which also keeps two resources apart.
    return cdi_dir / (resource.effective_cdi_kind.replace("/", "-") + ".json")


def write_spec(cdi_dir: Path, resource: ResourceConfig) -> Path:
    path = spec_path(cdi_dir, resource)
    write_atomic(path, json.dumps(build_spec(resource), indent=2).encode() + b"\n", mode=0o644)
    log.info("wrote CDI spec %s (kind %s)", path, resource.effective_cdi_kind)
    return path


def remove_spec(path: Path) -> None:
    try:
        os.unlink(path)
        log.info("removed CDI spec %s", path)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("cannot remove CDI spec %s: %s", path, err.strerror)
