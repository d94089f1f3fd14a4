"""scripts/libvirt-up.sh touches only what it owns; `make run` probes on a host without /dev/kvm.

Seen (issue 11): libvirt-up killed every process named libvirtd it could see
(``pkill -x``), appended ``user = "root"`` to /etc/libvirt/qemu.conf without
saying so, and on a host without /dev/kvm failed ``make run`` inside its
warm-up ("the accel 'kvm' is not supported") so the probe never ran.

Each case runs on a host of its own: a new PID and mount namespace where
/run, /var/lib/libvirt, /var/log/libvirt and the QEMU capabilities cache are
private (the shared libvirtd and its socket are out of sight and untouched),
/etc/passwd and /etc/group lack the libvirt-qemu user as on a fresh Debian
without libvirt-daemon-system, and, for the no-KVM case, /dev is a tmpfs with
the usual nodes but no kvm. Everything started inside dies with the namespace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import REPO

LIBVIRT_UP = REPO / "scripts" / "libvirt-up.sh"

# A host of its own; $W is a scratch directory, removed by the test.
_ISOLATE = r"""
set -eu
mount -t tmpfs kvminfo-test /run
mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
mount -t tmpfs kvminfo-test /var/lib/libvirt
mount -t tmpfs kvminfo-test /var/log/libvirt
mkdir "$W/cache" && cp -a /var/cache/libvirt/. "$W/cache/" && mount --bind "$W/cache" /var/cache/libvirt
grep -v '^libvirt-qemu:' /etc/passwd > "$W/passwd"; mount --bind "$W/passwd" /etc/passwd
grep -v '^libvirt-qemu:' /etc/group > "$W/group"; mount --bind "$W/group" /etc/group
# What the old script wrote (qemu.conf, the users and groups); libvirtd itself may create
# its own directories under /etc/libvirt, as it does under systemd.
etc_sum() { { ls -l /etc/libvirt/qemu.conf 2>&1; cat /etc/libvirt/qemu.conf /etc/passwd /etc/group /etc/shadow \
              /etc/gshadow 2>/dev/null; } | sha256sum; }
"""

# /etc/libvirt in both shapes Debian has, whichever this host has: Debian 12 without
# libvirt-daemon-system has no qemu.conf at all; Debian 13's QEMU driver package ships one
# with every setting commented out (its defaults), which is what a missing one becomes here.
_NO_QEMU_CONF = r"""
cp -a /etc/libvirt "$W/etc-libvirt" && rm -f "$W/etc-libvirt/qemu.conf" && mount --bind "$W/etc-libvirt" /etc/libvirt
"""
_QEMU_CONF = r"""
if [ ! -e /etc/libvirt/qemu.conf ]; then
  cp -a /etc/libvirt "$W/etc-libvirt" && mount --bind "$W/etc-libvirt" /etc/libvirt
  printf '# Master configuration file for the QEMU driver.\n#user = "libvirt-qemu"\n#group = "libvirt-qemu"\n' \
    > /etc/libvirt/qemu.conf
fi
"""

_NO_KVM = r"""
mkdir "$W/dev" && mount -t tmpfs -o mode=0755 kvminfo-test "$W/dev"
for n in null zero full random urandom tty; do touch "$W/dev/$n"; mount --bind "/dev/$n" "$W/dev/$n"; done
mkdir "$W/dev/pts" "$W/dev/shm" && mount --rbind /dev/pts "$W/dev/pts" && mount -t tmpfs kvminfo-test "$W/dev/shm"
mount --rbind "$W/dev" /dev
test ! -e /dev/kvm
"""


def on_a_host_of_its_own(script: str, no_kvm: bool = False,
                         qemu_conf: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: a PID and mount namespace of its own")
    for tool in ("unshare", "libvirtd", "virsh"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    work = Path(tempfile.mkdtemp(prefix="kvminfo-lvup.", dir="/tmp"))
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--propagation", "private",
                               "bash", "-c", _ISOLATE + (_QEMU_CONF if qemu_conf else _NO_QEMU_CONF)
                               + (_NO_KVM if no_kvm else "") + script],
                              cwd=REPO, env={**os.environ, "W": str(work)}, capture_output=True, text=True,
                              timeout=90)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("qemu_conf", [True, False], ids=["qemu.conf", "no-qemu.conf"])
def test_starts_its_own_libvirtd_and_stops_only_that_one_leaving_etc_alone(qemu_conf):
    done = on_a_host_of_its_own(qemu_conf=qemu_conf, script=r"""
before=$(etc_sum)
# someone else's libvirtd (as a test's private daemon is): its own sockets and state
mkdir "$W/foreign"; printf 'unix_sock_dir = "%s"\n' "$W/foreign" > "$W/foreign/libvirtd.conf"
mkdir -p /run/libvirt
bash scripts/libvirt-up.sh --exec sh -ec 'mount -t tmpfs t /run/libvirt; mount -t tmpfs t /var/lib/libvirt
    exec libvirtd -d -f "$W/foreign/libvirtd.conf" -p "$W/foreign/pid"'
for _ in $(seq 100); do [ -s "$W/foreign/pid" ] && break; sleep 0.1; done
foreign=$(cat "$W/foreign/pid")
echo "first: $(bash scripts/libvirt-up.sh 2>&1)"
echo "again: $(bash scripts/libvirt-up.sh 2>&1)"
echo "answers: $(virsh -c qemu:///system uri)"
echo "kvm: $(virsh -c qemu:///system domcapabilities --virttype kvm | grep -c '<domain>kvm</domain>')"
echo "stop: $(bash scripts/libvirt-up.sh --stop 2>&1)"
echo "stop again: $(bash scripts/libvirt-up.sh --stop 2>&1)"
echo "foreign alive: $(cat /proc/$foreign/comm)"
echo "libvirtds: $(grep -lx libvirtd /proc/[0-9]*/comm | wc -l)"
[ -e /etc/libvirt/qemu.conf ] && echo "qemu.conf: present" || echo "qemu.conf: absent"
[ "$before" = "$(etc_sum)" ] && echo "etc: unchanged"
""")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    (first,) = lines(out, "first: ")
    assert re.fullmatch(r"first: libvirt-up: started libvirtd pid \d+ with private configuration, nothing under "
                        r"/etc changed: .*QEMU as root.*libvirt-qemu user.*\(stop it: make libvirt-down\)", first)
    assert lines(out, "again: ") == [f"again: libvirt-up: libvirtd ready on qemu:///system "
                                     f"(pid {first.split('pid ')[1].split()[0]}, started by libvirt-up)"]
    assert lines(out, "answers: ") == ["answers: qemu:///system"]
    assert lines(out, "kvm: ") == ["kvm: 1"]  # QEMU (as root, the private qemu.conf) could open /dev/kvm
    assert lines(out, "stop: ")[0].startswith("stop: libvirt-up: stopped libvirtd pid ")
    assert lines(out, "stop again: ") == ["stop again: libvirt-up: no libvirtd started by libvirt-up runs; "
                                          "nothing stopped"]
    assert lines(out, "foreign alive: ") == ["foreign alive: libvirtd"]  # never signalled
    assert lines(out, "libvirtds: ") == ["libvirtds: 1"]
    assert "etc: unchanged" in out
    assert lines(out, "qemu.conf: ") == [f"qemu.conf: {'present' if qemu_conf else 'absent'}"]
    assert ("the host has no qemu.conf: it sees a private copy of /etc/libvirt" in first) is not qemu_conf


def test_make_run_without_dev_kvm_still_prints_the_probe():
    done = on_a_host_of_its_own("exec make -s -o install run\n", no_kvm=True)
    assert done.returncode == 0, done.stderr
    assert "no /dev/kvm on this host" in done.stderr and "QEMU capabilities not warmed" in done.stderr
    assert "make run: libvirt-up failed" not in done.stderr
    kvm_row = next(line for line in done.stdout.splitlines() if line.split()[:1] == ["kvm"])
    assert kvm_row.split()[1] == "unavailable" and "/dev/kvm: no such device" in kvm_row
    libvirt_row = next(line for line in done.stdout.splitlines() if line.split()[:1] == ["libvirt"])
    assert "unavailable" in libvirt_row and "kvm" in libvirt_row
