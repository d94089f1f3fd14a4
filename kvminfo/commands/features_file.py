"""`kvminfo features-file`: write this node's labels as an NFD feature file.

One-shot by default; with --interval it is the sidecar that keeps the file
fresh, rewriting only when the labels changed or the expiry is near, so NFD's
fsnotify watcher is not woken every interval for nothing.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping

from kvminfo.commands.labels import options_for_families
from kvminfo.durations import format_duration, parse_duration
from kvminfo.errors import KvminfoError
from kvminfo.logsetup import configure_logging
from kvminfo.labels.lines import describe_label_diff
from kvminfo.labels.render import FAMILIES
from kvminfo.options import ProbeOptions, add_probe_arguments, probe_options_from_args
from kvminfo.output.atomic import refuse_unless_regular, write_atomic
from kvminfo.output.featurefile import FeatureFile, format_rfc3339, parse_feature_file, render_feature_file
from kvminfo.report import collect, probe_deadline_s
from kvminfo.stopping import Stopped, StopOnSignal

log = logging.getLogger(__name__)

DEFAULT_EXPIRY_S = 3600
# A round is the interval plus the probe's deadline: the longest time from one
# write to the next. The file is rewritten while this many rounds of validity are
# left, and --expiry must cover them, so that one slow or failed round never lets
# the labels expire on a healthy node.
REFRESH_WITHIN_ROUNDS = 2

DESCRIPTION = """\
Probe this node and write its Node Feature Discovery labels to an NFD feature
file (NFD >= 0.14 reads /etc/kubernetes/node-feature-discovery/features.d/).
The file is replaced atomically (a dotfile in the same directory, then a
rename; NFD skips dotfiles) and starts with a `# +expiry-time=<RFC3339>`
directive: NFD drops the labels after that moment, so a dead sidecar cannot
leave stale capabilities on the node.

Without --interval: write once and exit. With --interval: keep running,
re-probe every interval, and rewrite only when the labels changed or less
than two rounds of validity are left, a round being the interval plus the
probe's deadline (--libvirt-timeout + 1 s with libvirt, else 5 s). So --expiry
must be at least 2 x (interval + probe deadline): one slow or failed round
then never lets the labels lapse. SIGTERM or SIGINT exits 0 at once (a
one-shot run stopped before it wrote exits 1).

Durations: 90s, 10m, 1h, 1h30m, 1d."""


@dataclass(frozen=True)
class Schedule:
    expiry_s: int
    interval_s: int | None  # None: write once
    probe_deadline_s: float  # the longest one probe may take (report.probe_deadline_s)

    def refresh_within_s(self) -> float:
        """Rewrite once less validity than this is left (sidecar mode); 0 for a one-shot run."""
        if self.interval_s is None:
            return 0.0
        return REFRESH_WITHIN_ROUNDS * (self.interval_s + self.probe_deadline_s)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", "-o", required=True, metavar="PATH",
                        help="feature file to write, e.g. /etc/kubernetes/node-feature-discovery/features.d/kvminfo "
                             "(its directory must exist)")
    parser.add_argument("--expiry", metavar="DURATION",
                        help="how long NFD may trust the labels after each write "
                             f"(default: {format_duration(DEFAULT_EXPIRY_S)}, or 3 intervals if that is longer, "
                             "and never less than the minimum); with --interval at least "
                             "2 x (interval + probe deadline), see above")
    parser.add_argument("--interval", metavar="DURATION",
                        help="keep running and re-probe this often (sidecar mode); default: write once and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step on stderr")
    add_probe_arguments(parser)
    return parser


def schedule_from_args(expiry: str | None, interval: str | None, probe_deadline_s: float) -> Schedule:
    interval_s = parse_duration(interval, "--interval") if interval is not None else None
    schedule = Schedule(DEFAULT_EXPIRY_S, interval_s, probe_deadline_s)
    minimum_s = math.ceil(schedule.refresh_within_s())
    if expiry is None:
        return replace(schedule, expiry_s=max(DEFAULT_EXPIRY_S, 3 * (interval_s or 0), minimum_s))
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
    if on_disk is None:
        return "no feature file yet"
    if on_disk.labels != dict(labels):
        return f"labels changed ({describe_label_diff(on_disk.labels, labels)})"
    if on_disk.expires_at is None:
        return "existing file has no valid expiry directive"
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


def check_output_path(path: Path) -> None:
    """Fail before probing (libvirt may take seconds) if the file can never be written."""
    directory = path.parent
    if path.is_dir() and not path.is_symlink():
        raise KvminfoError(f"--output {path}: is a directory; give a file path inside it")
    refuse_unless_regular(path, "--output ")
    if not directory.is_dir():
        raise KvminfoError(f"--output {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise KvminfoError(f"--output {path}: directory {directory} is not writable")


def write_feature_file(path: Path, labels: Mapping[str, str], now: datetime, expiry_s: int, reason: str) -> None:
    expires_at = now + timedelta(seconds=expiry_s)
    write_atomic(path, render_feature_file(labels, expires_at))
    log.info("wrote %s: %d labels, expires %s; reason: %s", path, len(labels), format_rfc3339(expires_at), reason)


def run_once(path: Path, options: ProbeOptions, schedule: Schedule, stop: StopOnSignal, always_write: bool) -> bool:
    """One round: probe, decide, maybe write. True when the file on disk is current."""
    with stop.abortable():
        report = collect(options)
    if stop.event.is_set():
        return False
    now = datetime.now(timezone.utc)
    reason = "one-shot" if always_write else rewrite_reason(read_feature_file(path), report.labels, now, schedule)
    if reason is None:
        log.info("left %s alone: labels unchanged, expiry not near", path)
        return True
    write_feature_file(path, report.labels, now, schedule.expiry_s, reason)
    return True


def main(argv: list[str], prog: str = "kvminfo features-file") -> int:
    args = build_parser(prog).parse_args(argv)
    configure_logging(args.verbose)
    if not args.verbose:
        log.setLevel(logging.INFO)  # the write/skip lines are this command's output
    # Every label family `kvminfo labels` prints, with the same default whitelist lookup.
    options = options_for_families(probe_options_from_args(args), list(FAMILIES))
    schedule = schedule_from_args(args.expiry, args.interval, probe_deadline_s(options))
    path = Path(args.output)
    check_output_path(path)
    stop = StopOnSignal()
    written = False
    try:
        written = run_once(path, options, schedule, stop, always_write=schedule.interval_s is None)
        if schedule.interval_s is not None:
            log.info("refreshing %s every %s (expiry %s)", path, format_duration(schedule.interval_s),
                     format_duration(schedule.expiry_s))
            while not stop.event.wait(schedule.interval_s):
                try:
                    run_once(path, options, schedule, stop, always_write=False)
                except KvminfoError as err:  # e.g. the directory vanished: keep trying, the node may recover
                    log.error("%s; retrying in %s", err, format_duration(schedule.interval_s))
    except Stopped:
        pass
    if not stop.event.is_set():
        return 0
    if schedule.interval_s is None and not written:
        # A one-shot caller (cron, init container) must not mistake this for success.
        log.warning("stopped on %s before %s was written", stop.signal_name, path)
        return 1
    log.info("stopping on %s", stop.signal_name)
    return 0
