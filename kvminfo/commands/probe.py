"""`kvminfo probe [--json]`: what each source said, each feature's verdict and who said so, the labels."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kvminfo.collect import collect
from kvminfo.commands.options import add_probe_arguments, options_for_families, probe_options_from_args
from kvminfo.common.argparsing import command_parser
from kvminfo.common.logsetup import configure_logging
from kvminfo.features.families import left_out_text
from kvminfo.features.family_facts import FamilyFacts
from kvminfo.labels import FAMILIES
from kvminfo.model import Report, SourceResult, Status
from kvminfo.sources import registry
from kvminfo.sources.facts import KVM, KvmFacts

DESCRIPTION = """\
Probe this node and explain the result: each source (kvm, libvirt,
kernel-whitelist) with its status (ok / unavailable / timeout / error /
disabled) and why; each Hyper-V enlightenment as supported / unsupported /
unknown with the evidence that said so (kvm-caps: the capability+MSR table,
kvm-hv-cpuid: KVM_GET_SUPPORTED_HV_CPUID bits, libvirt: domain
capabilities) and why each said it (or, for libvirt, why its silence says
nothing: a name newer than the answering libvirt); each label family beyond
Hyper-V (cpu-models, cpu-features, host-model-features, machine-types,
confidential, tsc, limits) with
what it found or why it gives no label here; then the labels `kvminfo labels`
would print."""

EXAMPLES = """\
examples:
  kvminfo probe                       # this node: sources, features, labels
  kvminfo probe --json --no-libvirt   # /dev/kvm only, as one JSON document"""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = command_parser(prog, DESCRIPTION, EXAMPLES)
    add_probe_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="one JSON document (top-level keys api_version, sources, features, families, labels, warnings)")
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
                      "said_by": {k: v.value for k, v in f.said_by.items()},
                      "reasons": dict(f.reasons)} for f in report.features],
        "families": report.families.to_json() if report.families is not None else None,
        "labels": dict(report.labels),
        "warnings": list(report.warnings),
    }


# The name stem of each family's labels (kvminfo/labels/families.py), to count them.
FAMILY_LABEL_STEMS: dict[str, tuple[str, ...]] = {
    "cpu-models": ("kvm-info-cpu-model-",), "cpu-features": ("kvm-info-cpu-feature-",),
    "host-model-features": ("kvm-info-host-model-requires-",), "machine-types": ("kvm-info-machine-type-",),
    "confidential": ("kvm-info-sev", "kvm-info-tdx", "kvm-info-sgx"), "tsc": ("kvm-info-tsc-",),
    "limits": ("kvm-info-max-vcpus",)}


def _source_summary(source: SourceResult) -> str:
    """One line of the facts an operator looks at first (the source's own summary), or why there are none."""
    if not source.ok:
        return source.reason
    return registry.entry(source.name).load().summary(source)


def _family_detail(name: str, fam: FamilyFacts) -> str:
    if name == "tsc" and fam.tsc is not None:
        scalable = {True: "scalable", False: "not scalable", None: "scaling unknown"}[fam.tsc.get("scalable")]
        return (f"{fam.tsc['frequency_hz']} Hz, {scalable} (said by {fam.tsc.get('said_by')}; invariant: "
                f"{fam.tsc.get('invariant')})")
    if name == "cpu-models" and fam.host_model_obsolete:
        return f"host model {fam.host_model} is on the obsolete list"
    return ""


def _families_text(report: Report) -> list[str]:
    """One line per label family beyond caps/version: what it found, or why it gives no label."""
    fam = report.families
    assert fam is None or isinstance(fam, FamilyFacts)
    chosen = [f for f in FAMILIES if f not in ("caps", "version")]
    lines = ["families:"]
    for name in chosen:
        if name not in report.rendered_families:
            lines.append(f"  {name:<20} off          not asked for (--family)")
            continue
        assert fam is not None
        count = sum(1 for key in report.labels if key.split("/")[-1].startswith(FAMILY_LABEL_STEMS[name]))
        if name in fam.absent:
            lines.append(f"  {name:<20} absent       {fam.absent[name]}")
        elif name == "confidential":
            said = "; ".join(f"{v.name} {v.support.value} ({v.reason})" for v in fam.confidential)
            lines.append(f"  {name:<20} {count} labels{'':<4} {said}")
        else:
            lines.append(f"  {name:<20} {count} labels{'':<4} {_family_detail(name, fam)}".rstrip())
        if name == "cpu-models" and fam.left_out_models and name not in fam.absent:
            lines.append(f"  {'':<20} {'':<12} left out (usable): {left_out_text(fam.left_out_models)}")
    return lines if len(lines) > 1 else []


def format_text(report: Report) -> str:
    lines = ["sources:"]
    for s in report.sources:
        took = f"{s.elapsed_ms:8.1f} ms" if s.status is not Status.DISABLED else " " * 11
        lines.append(f"  {s.name:<17} {s.status.value:<12} {took}  {_source_summary(s)}")
    lines.append("features:")
    for f in report.features:
        said = ", ".join(f"{k}={v.value}" for k, v in f.said_by.items()) or "no source knows"
        lines.append(f"  {f.name:<17} {f.support.value:<12} {said}")
        lines.extend(f"  {'':<17} {'':<12}   {source}: {why}" for source, why in f.reasons.items())
    lines.extend(_families_text(report))
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
    report = collect(options_for_families(probe_options_from_args(args)))
    if args.json:
        sys.stdout.write(json.dumps(report_to_json(report), indent=1) + "\n")
    else:
        sys.stdout.write(format_text(report))
    return 0
