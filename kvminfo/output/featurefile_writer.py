"""The NFD feature file as an Output: when to rewrite it and how long NFD may trust it.

Policy (pure: Schedule, schedule_from_args, rewrite_reason) and its edge
(FeatureFileOutput: read back, write atomically). The file format itself is
kvminfo.output.featurefile. Used by `kvminfo features-file` and the soak writer.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from kvminfo.common.atomic import refuse_unless_regular, temp_path_for, write_atomic
from kvminfo.common.durations import MAX_DURATION_S, format_duration, parse_duration
from kvminfo.common.errors import KvminfoError
from kvminfo.common.fsutil import unlink_if_exists
from kvminfo.output.base import labels_changed
from kvminfo.output.featurefile import FeatureFile, format_rfc3339, parse_feature_file, render_feature_file

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Mapping

    from kvminfo.model import Report

log = logging.getLogger(__name__)

DEFAULT_EXPIRY_S = 3600
# A round is the interval plus the probe's deadline: the longest time from one
# write to the next. The file is rewritten while this many rounds of validity are
# left, and --expiry must cover them, so that one slow or failed round never lets
# the labels expire on a healthy node.
REFRESH_WITHIN_ROUNDS = 2
# A shorter interval would re-probe (libvirt, the device) in a tight loop.
MIN_INTERVAL_S = 1


NEVER = "never"  # --expiry never: no expiry directive, NFD keeps the labels while the file exists


@dataclass(frozen=True)
class Schedule:
    expiry_s: float | None  # None: --expiry never
    interval_s: float | None  # None: write once
    probe_deadline_s: float  # the longest one probe may take (kvminfo.collect.probe_deadline_s)

    def refresh_within_s(self) -> float:
        """Rewrite once less validity than this is left (sidecar mode); 0 for a one-shot run."""
        if self.interval_s is None:
            return 0.0
        return REFRESH_WITHIN_ROUNDS * (self.interval_s + self.probe_deadline_s)


def schedule_from_args(expiry: str | None, interval: str | None, probe_deadline_s: float) -> Schedule:
    """--expiry and --interval as given (None: not given); ParseError/KvminfoError name the option."""
    interval_s = parse_duration(interval, "--interval", MIN_INTERVAL_S) if interval is not None else None
    schedule = Schedule(DEFAULT_EXPIRY_S, interval_s, probe_deadline_s)
    if expiry is not None and expiry.strip() == NEVER:  # no expiry, so no round can let it lapse
        return replace(schedule, expiry_s=None)
    minimum_s = math.ceil(schedule.refresh_within_s())
    if interval_s is not None and minimum_s > MAX_DURATION_S:  # no --expiry could ever be valid
        longest = math.floor(MAX_DURATION_S / REFRESH_WITHIN_ROUNDS - probe_deadline_s)
        raise KvminfoError(f"--interval {format_duration(interval_s)} is too long for a feature file: --expiry must "
                           f"be at least {REFRESH_WITHIN_ROUNDS} x (interval + {format_duration(probe_deadline_s)} "
                           f"probe deadline) = {format_duration(minimum_s)} and can be at most "
                           f"{format_duration(MAX_DURATION_S)}; use --interval {format_duration(longest)} or less")
    if expiry is None:
        # 1h, or 3 intervals if longer (capped at the longest expiry), never below the minimum
        return replace(schedule, expiry_s=max(min(max(DEFAULT_EXPIRY_S, 3 * (interval_s or 0)), MAX_DURATION_S), minimum_s))
    expiry_s = parse_duration(expiry, "--expiry")
    if expiry_s < minimum_s:
        raise KvminfoError(f"--expiry {format_duration(expiry_s)} is too short for --interval "
                           f"{format_duration(interval_s or 0)}: at least {format_duration(minimum_s)} "
                           f"({REFRESH_WITHIN_ROUNDS} x (interval + {format_duration(probe_deadline_s)} probe deadline)), "
                           "or one slow or failed round lets the labels lapse")
    return replace(schedule, expiry_s=expiry_s)


def rewrite_reason(on_disk: FeatureFile | None, labels: Mapping[str, str], now: datetime,
                   schedule: Schedule) -> str | None:
    """Why the file must be rewritten now, or None to leave it alone.

    Compares labels, never bytes: the expiry line differs on every render.
    """
    changed = labels_changed(on_disk.labels if on_disk is not None else None, labels, "feature file")
    if changed is not None or on_disk is None:
        return changed
    if schedule.expiry_s is None:
        return "existing file expires; --expiry never writes none" if on_disk.expires_at is not None else None
    if on_disk.expires_at is None:
        return "existing file has no valid expiry directive"
    latest = now + timedelta(seconds=schedule.expiry_s)
    if on_disk.expires_at > latest:
        # Not an expiry we would write now (a foreign or older file, a longer --expiry):
        # left alone it would outlive this sidecar by that much if it died.
        return f"expiry {format_rfc3339(on_disk.expires_at)} is later than now + --expiry ({format_rfc3339(latest)})"
    left = on_disk.expires_at - now
    if left < timedelta(seconds=schedule.refresh_within_s()):
        return f"expiry near ({format_duration(max(0.0, left.total_seconds()))} left)"
    return None


def read_feature_file(path: Path) -> FeatureFile | None:
    try:
        refuse_unless_regular(path)  # reading a FIFO would block the sidecar for good
    except KvminfoError:
        return None  # the write that follows refuses it, with the reason
    try:
        return parse_feature_file(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        log.warning("%s: cannot read back (%s); rewriting it", path, err)
        return None


def check_output_path(text: str) -> Path:
    """--output as a Path; fail before probing (libvirt may take seconds) if the file can never be
    written. A dotfile is written, with a warning: NFD >= 0.15 skips dotfiles in features.d
    (docs/install.md, "Three ways to feed NFD")."""
    if not text.strip():
        raise KvminfoError("--output is empty; give the feature file's path, e.g. "
                           "/etc/kubernetes/node-feature-discovery/features.d/kvminfo")
    path = Path(text)
    directory = path.parent
    mode = _stat_mode(path, os.lstat)
    if mode is not None and stat.S_ISDIR(mode):
        raise KvminfoError(f"--output {path}: is a directory; give a file path inside it")
    refuse_unless_regular(path, "--output ")
    directory_mode = _stat_mode(directory, os.stat)
    if directory_mode is None or not stat.S_ISDIR(directory_mode):
        raise KvminfoError(f"--output {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise KvminfoError(f"--output {path}: directory {directory} is not writable")
    _try_create(path)
    if path.name.startswith("."):
        log.warning("--output %s: NFD skips dotfiles in features.d, so it will not read these labels; "
                    "written anyway", path)
    return path


def _stat_mode(path: Path, stat_call: Callable[[Path], os.stat_result]) -> int | None:
    """The mode of ``path``, None if it does not exist; a directory on the way this user may not
    search (a 0700 parent) is one line, not a traceback (Path.is_dir raises PermissionError)."""
    try:
        return stat_call(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise KvminfoError(f"--output {path}: cannot look it up: {err.strerror or err}") from None


def _try_create(path: Path) -> None:
    """Create and remove the writer's own temp file, so that a directory root may "access" but not
    write in (/proc, a read-only mount) fails here with --output's message, not after the probe."""
    temp = temp_path_for(path)
    try:
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        return  # a writer's leftover (or one at work): write_atomic replaces it
    except OSError as err:
        raise KvminfoError(f"--output {path}: cannot write in directory {path.parent}: "
                           f"{err.strerror or err}") from None
    unlink_if_exists(temp)


def write_feature_file(path: Path, labels: Mapping[str, str], now: datetime, expiry_s: float | None,
                       reason: str) -> None:
    expires_at = None if expiry_s is None else now + timedelta(seconds=expiry_s)
    write_atomic(path, render_feature_file(labels, expires_at))
    expires = NEVER if expires_at is None else format_rfc3339(expires_at)
    log.info("wrote %s: %d labels, expires %s; reason: %s", path, len(labels), expires, reason)


class FeatureFileOutput:
    """An NFD feature file (features.d/), rewritten only when the labels changed or its expiry is near."""

    def __init__(self, path: Path, schedule: Schedule) -> None:
        self.path, self.schedule = path, schedule
        self.target = str(path)

    def write(self, report: Report, one_shot: bool, stop: threading.Event) -> bool:
        now = datetime.now(UTC)
        reason = "one-shot" if one_shot else rewrite_reason(read_feature_file(self.path), report.labels, now,
                                                            self.schedule)
        if reason is None:
            log.info("left %s alone: labels unchanged, expiry not near", self.path)
            return True
        write_feature_file(self.path, report.labels, now, self.schedule.expiry_s, reason)
        return True
