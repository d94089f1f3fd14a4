"""kvminfo_plugin.inotify: the masks are the kernel header's, and the calls work
on real directories (issue 12: inotify-simple's ctypes.util import was ~1.1 MiB
of the device plugin's RSS)."""

from __future__ import annotations

import errno
import re
import select
from pathlib import Path

import pytest

from kvminfo_plugin import inotify
from kvminfo_plugin.inotify import INotify, flags

HEADER = Path("/usr/include/linux/inotify.h")  # linux-libc-dev


def test_masks_are_the_kernel_headers() -> None:
    if not HEADER.exists():
        pytest.skip(f"{HEADER} not installed (Debian package linux-libc-dev)")
    defined = {m[1]: int(m[2], 16) for m in re.finditer(r"#define\s+IN_(\w+)\s+(0x[0-9a-fA-F]+)", HEADER.read_text())}
    ours = {name: value for name, value in vars(flags).items() if name.isupper()}
    assert ours and all(defined[name] == value for name, value in ours.items()), (ours, defined)


def wait(notify: INotify) -> list[inotify.Event]:
    poller = select.poll()
    poller.register(notify.fileno(), select.POLLIN)
    assert poller.poll(5000), "no event within 5 s"
    return notify.read()


def test_events_of_a_real_directory(tmp_path: Path) -> None:
    notify = INotify()
    try:
        assert notify.read() == []  # non-blocking: nothing queued yet
        wd = notify.add_watch(str(tmp_path), flags.CREATE | flags.DELETE | flags.MOVED_TO | flags.ATTRIB | flags.DELETE_SELF)
        (tmp_path / "node").touch()
        (tmp_path / "sub").mkdir()
        (tmp_path / "node").rename(tmp_path / "n\u00e9w")
        (tmp_path / "n\u00e9w").unlink()
        events = []
        while len(events) < 4:
            events += wait(notify)
        assert [(e.wd, e.name) for e in events[:4]] == [(wd, "node"), (wd, "sub"), (wd, "n\u00e9w"), (wd, "n\u00e9w")]
        assert events[0].mask & flags.CREATE and not events[0].mask & flags.ISDIR
        assert events[1].mask & flags.CREATE and events[1].mask & flags.ISDIR
        assert events[2].mask & flags.MOVED_TO and events[3].mask & flags.DELETE
        notify.rm_watch(wd)
        assert any(e.wd == wd and e.mask & flags.IGNORED and e.name == "" for e in wait(notify))
        with pytest.raises(OSError) as missing:
            notify.add_watch(str(tmp_path / "no-such-dir"), flags.CREATE)
        assert missing.value.errno == errno.ENOENT
    finally:
        notify.close()
    notify.close()  # twice is harmless
