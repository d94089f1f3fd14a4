"""`kvminfo labels`: NFD label lines (key=value), one per line, sorted.

This is also what the NFD hooks run (nfd-hooks/), so it stays light: with
--no-libvirt nothing imports libvirt, xml, grpc or kubernetes.
"""

from __future__ import annotations

import argparse

from kvminfo.collect import collect
from kvminfo.commands.options import add_probe_arguments, options_for_families, probe_options_from_args
from kvminfo.common.argparsing import command_parser
from kvminfo.common.logsetup import configure_logging
from kvminfo.output.base import StdoutLines

DESCRIPTION = """\
Probe this node and print its Node Feature Discovery labels as key=value
lines, sorted. Every key is fully qualified: feature.node.kubernetes.io/<name>
(the names below).
Families (--family, repeatable): "caps" (kvm-info-cap-hyperv-<feature> for
each supported Hyper-V enlightenment, kvm-info-usable, kvm-info-nested,
kvm-info-cpu-vendor, kvm-info-host-model), "version"
(kvm-info-version-hyperv[-lev2] from the kernel whitelist), "cpu-models"
(kvm-info-cpu-model-<model>), "cpu-features" (kvm-info-cpu-feature-<feature>:
the host CPU's features, libvirt's baseline of the host-model as KubeVirt
reads it), "host-model-features" (kvm-info-host-model-requires-<feature>; not
in the default set), "machine-types" (kvm-info-machine-type-<type>: what a
KVM guest of the host's architecture can use),
"confidential" (kvm-info-sev, -sev-es, -sev-snp, -tdx, -sgx,
-sgx-epc-bytes), "tsc" (kvm-info-tsc-frequency, kvm-info-tsc-scalable) and
"limits" (kvm-info-max-vcpus). `kvminfo probe` says why a family is absent.
A source that cannot answer (no /dev/kvm, libvirt down)
is reported in one line on stderr and contributes no labels; the exit status
is still 0. Bad input (config, replayed XML) exits non-zero.

The version family reads --whitelist-config, or when none is given
/etc/kubernetes/node-feature-discovery/source.d/conf/kvm-version-info.json
(where kvm-version-info-nfd-plugin looked) if that file exists."""

EXAMPLES = """\
examples:
  kvminfo labels --no-libvirt                        # the NFD hook's fast path
  kvminfo labels --family version --whitelist-config kvm-version-info.json"""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = command_parser(prog, DESCRIPTION, EXAMPLES)
    add_probe_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step on stderr")
    return parser


def main(argv: list[str], prog: str = "kvminfo labels") -> int:
    args = build_parser(prog).parse_args(argv)
    configure_logging(args.verbose)
    options = options_for_families(probe_options_from_args(args))
    StdoutLines().write(collect(options))
    return 0
