"""Label maps as text: NFD's line format and a one-line description of a change.

Dependency-free so that every writer (hook output, feature file, NodeFeature
publisher) shares one format without importing the probe stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


def format_label_lines(labels: Mapping[str, str]) -> str:
    """NFD's hook/feature-file line format: key=value, one a line, sorted by key."""
    return "".join(f"{key}={labels[key]}\n" for key in sorted(labels))


def describe_label_diff(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """'+added; -removed; ~changed' keys, for the log line that explains a rewrite."""
    added = sorted(k for k in new if k not in old)
    removed = sorted(k for k in old if k not in new)
    changed = sorted(k for k in new if k in old and old[k] != new[k])
    parts = [f"{sign}{', '.join(keys)}" for sign, keys in (("+", added), ("-", removed), ("~", changed)) if keys]
    return "; ".join(parts)
