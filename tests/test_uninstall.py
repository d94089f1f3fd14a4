"""kvminfo features-file --remove: what deploy/cleanup runs on every node.

Only a file kvminfo wrote goes: a feature file whose first line is the header
`kvminfo features-file` writes (made here by the real writer), the relay hook
with its marker line (deploy/nfd/hooks/relay-hook.sh itself); a symlink, a
FIFO, anyone else's file and a non-empty data directory stay, each with one
line saying so, exit 0. Bad usage is a one-line error.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import KVMINFO, REPO

RELAY_HOOK = REPO / "deploy" / "nfd" / "hooks" / "relay-hook.sh"


def kvminfo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(KVMINFO), "features-file", *args], capture_output=True, text=True, timeout=60)


def written_by_kvminfo(path: Path) -> Path:
    done = kvminfo("--output", str(path), "--no-libvirt")
    assert done.returncode == 0, done.stderr
    return path


def test_removes_what_the_writer_wrote_and_says_so(tmp_path):
    ours = written_by_kvminfo(tmp_path / "kvminfo")
    done = kvminfo("--output", str(ours), "--remove")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{ours}: removed\n", "")
    assert not ours.exists()
    again = kvminfo("--output", str(ours), "--remove")
    assert (again.returncode, again.stdout) == (0, f"{ours}: not present\n")


def test_leaves_anything_not_kvminfos(tmp_path):
    foreign = tmp_path / "kvminfo"
    foreign.write_text("# Written by someone else\nvendor.example/x=1\n")
    target = written_by_kvminfo(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (foreign, link, fifo):
        done = kvminfo("--output", str(path), "--remove")
        assert done.returncode == 0 and done.stdout.startswith(f"{path}: left in place: not written by kvminfo"), \
            done.stdout + done.stderr
        assert os.path.lexists(path)
    assert target.exists()  # the symlink's target too


def test_relay_hook_and_its_data_go_someone_elses_stay(tmp_path):
    source_d = tmp_path / "source.d"
    (source_d / "kvminfo.d").mkdir(parents=True)
    hook = source_d / "kvminfo"
    hook.write_text(RELAY_HOOK.read_text())
    labels = written_by_kvminfo(source_d / "kvminfo.d" / "labels")
    done = kvminfo("--output", str(labels), "--remove", "--relay-hook", str(hook))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{labels}: removed", f"{hook}: removed", f"{source_d / 'kvminfo.d'}: removed"]
    assert list(source_d.iterdir()) == []
    # a vendor's hook of the same name, and a data directory holding someone's file
    hook.write_text("#!/bin/sh\necho vendor.example/y=1\n")
    (source_d / "kvminfo.d").mkdir()
    (source_d / "kvminfo.d" / "notes").write_text("mine\n")
    done = kvminfo("--output", str(labels), "--remove", "--relay-hook", str(hook))
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        f"{labels}: not present", f"{hook}: left in place: not kvminfo's relay hook "
        "(no 'kvminfo-hook-relay: this hook is kvminfo's' line)",
        f"{source_d / 'kvminfo.d'}: left in place: directory not empty"]
    assert hook.exists() and (source_d / "kvminfo.d" / "notes").exists()


def test_relay_hook_without_remove_is_a_usage_error(tmp_path):
    done = kvminfo("--output", str(tmp_path / "x"), "--relay-hook", str(tmp_path / "kvminfo"))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1  # one line, as every usage error
    assert "--relay-hook is an uninstall option: use it with --remove" in done.stderr
