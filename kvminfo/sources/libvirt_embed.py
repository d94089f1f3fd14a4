"""libvirt's embedded QEMU driver, ``qemu:///embed?root=DIR``: libvirt's QEMU driver
inside the kvminfo process, no daemon, no polkit, no socket (libvirt >= 6.1).

What the kvminfo pods use by default (deploy/): most Kubernetes nodes run no
libvirtd, so the image carries libvirt's QEMU driver and QEMU, and each
labeller asks its own copy. libvirt's rules for the driver (libvirt
docs/drvqemu.rst "Embedded driver", libvirt src/qemu/qemu_driver.c
qemuStateInitialize and src/qemu/qemu_conf.c virQEMUDriverConfigNew):

- an event loop must be registered before the connection opens and keep
  running while it is used (the driver talks QMP to the QEMU it probes):
  virEventRegisterDefaultImpl, then a thread looping on
  virEventRunDefaultImpl; once per process;
- everything lives under DIR: DIR/etc/qemu.conf, DIR/cache/qemu/capabilities
  (the QEMU probe's result: the first call costs seconds, later ones
  milliseconds while it stays), DIR/run (a pid file lock: one process per
  DIR at a time), DIR/lib/qemu/qmp-XXXXXX/qmp.monitor (QEMU's QMP socket: a
  unix socket path has at most 107 bytes, so DIR should stay under about 70);
- as root the driver is privileged and runs QEMU as qemu.conf's user, by
  default Debian's ``libvirt-qemu``, which cannot open a root-owned
  /dev/kvm (0600 in a container given the node as the host has it): libvirt
  then finds KVM unusable and probes QEMU again on every call. So a root
  kvminfo writes DIR/etc/qemu.conf with ``user``/``group`` root when DIR has
  none (an operator's own file stays as it is);
- as another uid the driver is unprivileged and runs QEMU as that uid. Its
  host-device state goes to $XDG_RUNTIME_DIR (else $HOME/.cache), which a
  read-only container root cannot give: without XDG_RUNTIME_DIR kvminfo sets
  it to DIR/run, beside the driver's own state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kvminfo.common.atomic import write_atomic
from kvminfo.common.errors import KvminfoError
from kvminfo.common.threads import start_daemon

log = logging.getLogger(__name__)

# What a root process's embedded driver needs to run QEMU as the owner of /dev/kvm.
ROOT_QEMU_CONF = ('# Written by kvminfo for its embedded libvirt: QEMU runs as root, who owns /dev/kvm.\n'
                  'user = "root"\ngroup = "root"\n')

_loop_lock = threading.Lock()
_loop_started = False


def embedded_root(uri: str) -> str | None:
    """DIR of ``qemu:///embed?root=DIR`` (any qemu+... transport is not embedded), else None."""
    parts = urlsplit(uri)
    if parts.scheme != "qemu" or parts.path != "/embed":
        return None
    roots = parse_qs(parts.query).get("root")
    return roots[0] if roots else None


def prepare_connection(libvirt: Any, uri: str) -> str | None:
    """Make ``uri`` openable in this process: for an embedded URI the event loop, the
    root's qemu.conf (as root) and XDG_RUNTIME_DIR (as another uid). Returns why it
    cannot be (one line), or None; a plain URI needs nothing."""
    root = embedded_root(uri)
    if root is None:
        return None
    start_event_loop(libvirt)
    if os.geteuid() == 0:
        conf = os.path.join(root, "etc", "qemu.conf")
        if not os.path.exists(conf):
            try:
                os.makedirs(os.path.dirname(conf), exist_ok=True)
                write_atomic(conf, ROOT_QEMU_CONF.encode())
            except (OSError, KvminfoError) as err:
                return f"cannot write {conf}: {getattr(err, 'strerror', None) or err}"
    else:
        os.environ.setdefault("XDG_RUNTIME_DIR", os.path.join(root, "run"))
    return None


def start_event_loop(libvirt: Any) -> None:
    """libvirt's default event loop, registered once and run in a daemon thread for the process's life."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        start_daemon("libvirt-events", _run_events, libvirt)
        _loop_started = True


def _run_events(libvirt: Any) -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:  # libvirt has reported why; do not spin on it
            log.debug("libvirt: event loop iteration failed")
            time.sleep(1)
