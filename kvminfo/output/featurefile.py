"""NFD feature file (features.d/, NFD >= 0.14): render and read back. Pure.

Format (NFD's local source): `#` comments; `key[=value]` lines; the directive
`# +expiry-time=<RFC3339>` applies to the lines after it, and NFD drops the
labels once it has passed, so a node whose sidecar died loses them instead of
advertising stale capabilities. NFD (0.14+) skips a file larger than 65,536
bytes (local.go: `Size() > MaxFeatureFileSize`, 65536); exactly 65,536 is read.

Checked against NFD's source/local/local.go: every comment starting "# +" is
parsed as a directive (unknown ones are logged as errors), so our header
comments must never start that way; the expiry is read with Go's
time.Parse(time.RFC3339, ...), which takes "2026-11-25T15:00:00Z".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from kvminfo import __version__
from kvminfo.common.errors import KvminfoError
from kvminfo.labels.lines import format_label_lines

MAX_BYTES = 65536  # NFD's MaxFeatureFileSize: a file larger than this is skipped
EXPIRY_DIRECTIVE = "# +expiry-time="
HEADER_MARK = "# Written by kvminfo "  # how uninstall (output/uninstall.py) knows a file is ours
HEADER = (
    f"{HEADER_MARK}{__version__} (kvminfo features-file). Do not edit: it is rewritten.\n"
    "# Node Feature Discovery labels, key=value, keys fully qualified (feature.node.kubernetes.io/...).\n"
)


@dataclass(frozen=True)
class FeatureFile:
    labels: dict[str, str]
    expires_at: datetime | None


def format_rfc3339(moment: datetime) -> str:
    """UTC, whole seconds, 'Z' (what Go's time.RFC3339 parser accepts)."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_feature_file(labels: Mapping[str, str], expires_at: datetime | None) -> bytes:
    """The whole file: header, expiry directive, then sorted key=value lines.

    ``expires_at`` None writes no directive: NFD (0.14+, source/local) then keeps
    the labels for as long as the file exists (its default expiry is "now" and
    only an expiry before now drops a line).
    """
    lines = [HEADER]
    if expires_at is not None:
        lines.append(f"{EXPIRY_DIRECTIVE}{format_rfc3339(expires_at)}\n")
    data = ("".join(lines) + format_label_lines(labels)).encode("utf-8")
    if len(data) > MAX_BYTES:
        raise KvminfoError(f"feature file would be {len(data)} bytes; NFD skips files larger than {MAX_BYTES} bytes")
    return data


def parse_feature_file(text: str) -> FeatureFile:
    """Labels and expiry from a feature file (ours or not); tolerant: comments and blank lines skipped."""
    labels: dict[str, str] = {}
    expires_at: datetime | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(EXPIRY_DIRECTIVE):
            expires_at = _parse_rfc3339(line[len(EXPIRY_DIRECTIVE):])
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            labels[key] = value if "=" in line else "true"  # NFD: no value means "true"
    return FeatureFile(labels, expires_at)


def _parse_rfc3339(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
