"""`kvminfo labels`: NFD label lines (key=value), one per line, sorted.

This is also what the NFD hooks run (nfd-hooks/), so it stays light: with
--no-libvirt nothing imports libvirt, xml, grpc or kubernetes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from kvminfo.labels.lines import format_label_lines
from kvminfo.labels.render import FAMILIES
from kvminfo.logsetup import configure_logging
from kvminfo.options import ProbeOptions, add_probe_arguments, probe_options_from_args
from kvminfo.report import collect

# Where kvm-version-info-nfd-plugin read its config; used when no --whitelist-config is given.
DEFAULT_WHITELIST_CONFIG = "/etc/kubernetes/node-feature-discovery/source.d/conf/kvm-version-info.json"

log = logging.getLogger(__name__)

DESCRIPTION = """\
Probe this node and print its Node Feature Discovery labels as key=value
lines, sorted. Keys without a prefix land under feature.node.kubernetes.io/.
Families: "caps" (kvm-info-cap-hyperv-<feature> for each supported Hyper-V
enlightenment, kvm-info-usable, kvm-info-nested, kvm-info-cpu-vendor,
kvm-info-host-model) and "version" (kvm-info-version-hyperv[-lev2] from the
kernel whitelist). A source that cannot answer (no /dev/kvm, libvirt down)
is reported in one line on stderr and contributes no labels; the exit status
is still 0. Bad input (config, replayed XML) exits non-zero.

The version family reads --whitelist-config, or when none is given
/etc/kubernetes/node-feature-discovery/source.d/conf/kvm-version-info.json
(where kvm-version-info-nfd-plugin looked) if that file exists."""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_arguments(parser)
    parser.add_argument("--family", action="append", choices=FAMILIES, metavar="FAMILY",
                        help=f"print only this label family ({', '.join(FAMILIES)}); repeatable; default: all. "
                             "Sources the chosen families do not need are not probed")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step on stderr")
    return parser


def options_for_families(options: ProbeOptions, families: list[str],
                         default_whitelist: str = DEFAULT_WHITELIST_CONFIG) -> ProbeOptions:
    """Switch off the sources the chosen families do not use."""
    if "caps" not in families:
        options = replace(options, use_kvm=False, use_libvirt=False)
    if "version" not in families:
        options = replace(options, whitelist_config=None)
    elif options.whitelist_config is None:
        if os.path.exists(default_whitelist):
            options = replace(options, whitelist_config=default_whitelist)
        elif set(families) == {"version"}:
            log.warning("no kernel whitelist: %s does not exist and no --whitelist-config was given; "
                        "no kvm-info-version labels", default_whitelist)
    return options


def main(argv: list[str], prog: str = "kvminfo labels") -> int:
    args = build_parser(prog).parse_args(argv)
    configure_logging(args.verbose)
    families = args.family or list(FAMILIES)
    options = options_for_families(probe_options_from_args(args), families)
    report = collect(options)
    sys.stdout.write(format_label_lines(dict(report.labels)))
    return 0
