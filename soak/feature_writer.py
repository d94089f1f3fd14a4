"""A feature-file writer that never rests: the product's own write path in a tight loop.

    python -m soak.feature_writer PATH

Rewrites PATH with the product's write_feature_file (atomic temp + rename)
under the product's StopOnSignal handler, as `kvminfo features-file
--interval` does, but without waiting between rounds, so that readers race a
rename as often as possible. It cycles through LABEL_SETS (a tiny, a typical
and a large file). Prints "ready" after the first write and, when SIGTERM ends
it, the number of writes.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from kvminfo.common.stopping import StopOnSignal
from kvminfo.output.featurefile_writer import write_feature_file

LABEL_SETS: tuple[dict[str, str], ...] = (
    {"kvm-info-usable": "true"},
    {"kvm-info-usable": "true", "kvm-info-host-model": "EPYC-Rome", "kvm-info-cpu-vendor": "AMD",
     **{f"kvm-info-cap-hyperv-{name}": "true" for name in ("relaxed", "vapic", "vpindex", "synic", "ipi")}},
    {f"kvm-info-soak-{i:04d}": f"value-{i:04d}-" + "x" * 40 for i in range(600)},  # ~45 KiB, under NFD's 64 KiB
)


def main(path: Path) -> int:
    stop = StopOnSignal()
    writes = 0
    while not stop.event.is_set():
        write_feature_file(path, LABEL_SETS[writes % len(LABEL_SETS)], datetime.now(UTC), 3600, "soak")
        writes += 1
        if writes == 1:
            print("ready", flush=True)
    print(writes, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
