"""`kvminfo features-file`: write this node's labels as an NFD feature file.

One-shot by default; with --interval it is the sidecar that keeps the file
fresh, rewriting only when the labels changed or the expiry is near, so NFD's
fsnotify watcher is not woken every interval for nothing.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from kvminfo.collect import collect, probe_deadline_s
from kvminfo.commands.options import (
    add_loop_arguments,
    add_probe_arguments,
    check_loop_arguments,
    loop_metrics,
    options_for_families,
    probe_options_from_args,
)
from kvminfo.common.argparsing import command_parser
from kvminfo.common.durations import format_duration
from kvminfo.common.logsetup import METRICS_LOGGER, OUTPUT_LOGGER, configure_from_args
from kvminfo.common.stopping import StopOnSignal
from kvminfo.output import periodic
from kvminfo.output.featurefile_writer import DEFAULT_EXPIRY_S, FeatureFileOutput, check_output_path, schedule_from_args
from kvminfo.output.uninstall import remove_feature_file, remove_relay_hook

DESCRIPTION = """\
Probe this node and write its Node Feature Discovery labels to an NFD feature
file (NFD >= 0.14 reads /etc/kubernetes/node-feature-discovery/features.d/).
The file is replaced atomically (a dotfile in the same directory, then a
rename; NFD skips dotfiles) and starts with a `# +expiry-time=<RFC3339>`
directive: NFD drops the labels after that moment, so a dead sidecar cannot
leave stale capabilities on the node.

Without --interval: write once and exit; the labels then lapse after
--expiry (1h by default) unless something rewrites the file, so a one-shot
run whose labels must stay (an init container) needs --expiry never. With
--interval: keep running, re-probe every interval, and rewrite only when the
labels changed, the file's expiry lies later than now + --expiry, or less
than two rounds of validity are left, a round being the interval plus the
probe's deadline (--libvirt-timeout with libvirt, else 5 s). So --expiry
must be at least 2 x (interval + probe deadline): one slow or failed round
then never lets the labels lapse. SIGTERM or SIGINT exits 0 at once (a
one-shot run stopped before it wrote exits 1).

Uninstall (deploy/cleanup): --remove deletes the --output file if kvminfo
wrote it (its first line is kvminfo's header) and, with --relay-hook, that NFD
relay hook script if it is kvminfo's, and its data directory once empty; it
probes nothing, prints one line per path and leaves anyone else's file in
place. The writer itself never removes its file on exit: a restart must not
drop the node's labels.

Durations: a number of seconds (60) or 90s, 10m, 1h30m, 1d; every time
option takes the same syntax."""

EXAMPLES = """\
examples:
  kvminfo features-file -o /etc/kubernetes/node-feature-discovery/features.d/kvminfo --interval 10m
  kvminfo features-file -o /etc/kubernetes/node-feature-discovery/features.d/kvminfo --remove"""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = command_parser(prog, DESCRIPTION, EXAMPLES)
    parser.add_argument("--output", "-o", required=True, metavar="PATH",
                        help="feature file to write, e.g. /etc/kubernetes/node-feature-discovery/features.d/kvminfo "
                             "(its directory must exist)")
    parser.add_argument("--expiry", metavar="DURATION",
                        help="how long NFD may trust the labels after each write "
                             f"(default: {format_duration(DEFAULT_EXPIRY_S)}, or 3 intervals if that is longer, "
                             "and never less than the minimum); with --interval at least "
                             "2 x (interval + probe deadline), see above. 'never': no expiry directive, so NFD "
                             "keeps the labels for as long as the file exists (a one-shot run whose labels must "
                             "not lapse; they then stay even if the node changes, until the file is rewritten or removed)")
    parser.add_argument("--interval", metavar="DURATION",
                        help="keep running and re-probe this often (sidecar mode); default: write once and exit")
    parser.add_argument("--remove", action="store_true",
                        help="uninstall: delete the --output file if kvminfo wrote it (and --relay-hook's files), "
                             "probe nothing, exit")
    parser.add_argument("--relay-hook", metavar="PATH",
                        help="with --remove: also kvminfo's NFD relay hook at PATH (source.d/kvminfo) and its "
                             "data directory PATH.d once empty")
    add_loop_arguments(parser)
    add_probe_arguments(parser)
    return parser


def main(argv: list[str], prog: str = "kvminfo features-file") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.relay_hook is not None and not args.remove:
        parser.error("--relay-hook is an uninstall option: use it with --remove")
    if args.remove:
        return _remove(args.output, args.relay_hook)
    stop = StopOnSignal()  # first, as in publish: a stop signal from here on is a stop, never a kill
    configure_from_args(args, info_loggers=(OUTPUT_LOGGER, METRICS_LOGGER))  # the write/skip lines: its output
    # Every label family `kvminfo labels` prints, with the same default whitelist lookup.
    options = options_for_families(probe_options_from_args(args))
    schedule = schedule_from_args(args.expiry, args.interval, probe_deadline_s(options))
    check_loop_arguments(args, schedule.interval_s)
    path = check_output_path(args.output)
    with loop_metrics(args, schedule.interval_s, options) as metrics:
        return periodic.run(FeatureFileOutput(path, schedule), partial(collect, options), schedule.interval_s, stop,
                            metrics)


def _remove(output: str, relay_hook: str | None) -> int:
    lines = [remove_feature_file(Path(output))]
    if relay_hook is not None:
        lines += remove_relay_hook(Path(relay_hook))
    for line in lines:
        print(line)
    return 0
