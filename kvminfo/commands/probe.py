"""`kvminfo probe [--json]`: what each source said, each feature's verdict and who said so, the labels."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kvminfo.collect import collect
from kvminfo.logsetup import configure_logging
from kvminfo.model import Report, SourceResult, Status
from kvminfo.options import add_probe_arguments, probe_options_from_args
from kvminfo.sources import registry
from kvminfo.sources.facts import KVM, KvmFacts

DESCRIPTION = """\
Probe this node and explain the result: each source (kvm, libvirt,
kernel-whitelist) with its status (ok / unavailable / timeout / error /
disabled) and why; each Hyper-V enlightenment as supported / unsupported /
unknown with the evidence that said so (kvm-caps: the capability+MSR table,
kvm-hv-cpuid: KVM_GET_SUPPORTED_HV_CPUID bits, libvirt: domain
capabilities); then the labels `kvminfo labels` would print."""

EXAMPLES = """\
examples:
  kvminfo probe                       # this node: sources, features, labels
  kvminfo probe --json --no-libvirt   # /dev/kvm only, as one JSON document"""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="one JSON document (top-level keys api_version, sources, features, labels, warnings)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step on stderr")
    return parser


def report_to_json(report: Report) -> dict[str, Any]:
    kvm = report.source(KVM)
    return {
        "api_version": kvm.facts.api_version if kvm is not None and isinstance(kvm.facts, KvmFacts) else None,
        "sources": [{"name": s.name, "status": s.status.value, "reason": s.reason,
                     "elapsed_ms": s.elapsed_ms, "facts": s.facts.to_json() if s.facts is not None else {}}
                    for s in report.sources],
        "features": [{"name": f.name, "support": f.support.value,
                      "said_by": {k: v.value for k, v in f.said_by.items()}} for f in report.features],
        "labels": dict(report.labels),
        "warnings": list(report.warnings),
    }


def _source_summary(source: SourceResult) -> str:
    """One line of the facts an operator looks at first (the source's own summary), or why there are none."""
    if not source.ok:
        return source.reason
    return registry.entry(source.name).load().summary(source)


def format_text(report: Report) -> str:
    lines = ["sources:"]
    for s in report.sources:
        took = f"{s.elapsed_ms:8.1f} ms" if s.status is not Status.DISABLED else " " * 11
        lines.append(f"  {s.name:<17} {s.status.value:<12} {took}  {_source_summary(s)}")
    lines.append("features:")
    for f in report.features:
        said = ", ".join(f"{k}={v.value}" for k, v in f.said_by.items()) or "no source knows"
        lines.append(f"  {f.name:<17} {f.support.value:<12} {said}")
    lines.append("labels:")
    lines.extend(f"  {k}={v}" for k, v in sorted(report.labels.items()))
    if not report.labels:
        lines.append("  (none)")
    for w in report.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"


def main(argv: list[str], prog: str = "kvminfo probe") -> int:
    args = build_parser(prog).parse_args(argv)
    configure_logging(args.verbose)
    report = collect(probe_options_from_args(args))
    if args.json:
        sys.stdout.write(json.dumps(report_to_json(report), indent=1) + "\n")
    else:
        sys.stdout.write(format_text(report))
    return 0
