"""Render soak results (soak/results/<variant>.json) as the table of docs/dev/soak.md.

    python -m soak.report                      # print the table of the short run
    python -m soak.report --variant long       # ... of the long run
    python -m soak.report --readme             # also replace the table in docs/dev/soak.md
    python -m soak.report --readme FILE        # ... in FILE instead

The page keeps each variant's table between ``<!-- soak-table:VARIANT:start -->``
and ``<!-- soak-table:VARIANT:end -->`` so a re-run replaces exactly that block.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kvminfo.common.atomic import write_atomic
from kvminfo.common.errors import KvminfoError

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SOAK_PAGE = Path(__file__).resolve().parent.parent / "docs" / "dev" / "soak.md"  # where the tables live


def format_latency(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1_000_000:.0f} µs"


FAMILY_ORDER = ("Device plugin", "Labelling", "Fuzzing", "Security")  # issue 5's order


def _family_rank(scenario: dict[str, Any]) -> int:
    family = scenario["family"]
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def render_table(results: dict[str, Any]) -> str:
    """Markdown: one row per scenario, with what its latency measures."""
    rows = ["| family | scenario | runs | held | worst latency (of what) | notes | test |",
            "|---|---|---:|---:|---|---|---|"]
    for s in sorted(results["scenarios"], key=_family_rank):
        held = f"{s['held']}" if s["held"] == s["runs"] else f"**{s['held']}**"  # bold: something did not hold
        latency = "-" if s["latency_of"] == "n/a" else f"{format_latency(s['worst_latency_s'])} ({s['latency_of']})"
        notes = s.get("notes", "").replace("|", "/")
        rows.append(f"| {s['family']} | {s['name']} | {s['runs']} | {held} | {latency} | {notes} | {s['outcome']} |")
    host = results["host"]
    caption = (f"Variant **{results['variant']}**, finished {results['finished']} on {host['cpus']} CPUs, "
               f"Linux {host['kernel']}, Python {host['python']}.")
    return caption + "\n\n" + "\n".join(rows) + "\n"


def replace_block(document: str, block: str, variant: str) -> str:
    start_marker, end_marker = f"<!-- soak-table:{variant}:start -->", f"<!-- soak-table:{variant}:end -->"
    start, end = document.find(start_marker), document.find(end_marker)
    if start < 0 or end < start:
        raise KvminfoError(f"no {start_marker} ... {end_marker} block to replace")
    return document[:start + len(start_marker)] + "\n" + block + document[end:]


def load(variant: str) -> dict[str, Any]:
    path = RESULTS_DIR / f"{variant}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KvminfoError(f"{path}: no results; run `make soak{' LONG=1' if variant == 'long' else ''}` first") from None
    except json.JSONDecodeError as err:
        raise KvminfoError(f"{path}: not valid JSON: {err}") from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("short", "long"), default="short",
                        help="which run's results to render (default: %(default)s)")
    parser.add_argument("--readme", metavar="FILE", nargs="?", const=str(SOAK_PAGE),
                        help="replace the table block in this page too (default: docs/dev/soak.md)")
    args = parser.parse_args(argv)
    try:
        table = render_table(load(args.variant))
        if args.readme:
            readme = Path(args.readme)
            try:
                page = replace_block(readme.read_text(encoding="utf-8"), table, args.variant)
            except KvminfoError as err:
                raise KvminfoError(f"{readme}: {err}") from None
            write_atomic(readme, page.encode("utf-8"))
    except (KvminfoError, OSError) as err:
        print(f"soak.report: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
