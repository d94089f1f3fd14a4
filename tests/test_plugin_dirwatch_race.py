"""A nested device directory that appears in two steps is watched, even when the
inner one is made between the watcher's failed try on it and its watch on the
outer one (its CREATE then came before any watch could see it). Seen as a rare
failure of test_device_directory_created_after_start_is_watched on a loaded
machine; here the race is made to happen every time, at the syscall wrapper."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from inotify_simple import INotify

from kvminfo_plugin.devices import dirwatch
from kvminfo_plugin.devices.dirwatch import Change, DirectoryWatcher, DirEvent


def test_inner_directory_made_just_before_the_outer_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outer, inner = tmp_path / "a", tmp_path / "a" / "b"
    real_add_watch = INotify.add_watch

    def racing_add_watch(self: INotify, path: str, mask: int) -> int:
        if path == str(outer) and outer.is_dir() and not inner.exists():
            inner.mkdir()  # lands after the ENOENT on a/b and before the watch on a
        return real_add_watch(self, path, mask)

    monkeypatch.setattr(dirwatch.INotify, "add_watch", racing_add_watch)
    events: list[DirEvent] = []
    node_seen = threading.Event()

    def on_event(event: DirEvent) -> None:
        events.append(event)
        if event.directory == str(inner) and event.name == "dev":
            node_seen.set()

    watcher = DirectoryWatcher([str(inner)], on_event, "race-test-inotify").start()
    try:
        outer.mkdir()  # the watch on tmp_path sees it; the watcher moves down and meets the race
        for _ in range(500):
            if any(e.directory == str(inner) and e.change is Change.RESCAN for e in events):
                break
            threading.Event().wait(0.01)
        (inner / "dev").touch()
        assert node_seen.wait(5), events
    finally:
        watcher.stop()
