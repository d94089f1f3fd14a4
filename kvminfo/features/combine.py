"""Pure: merge per-evidence verdicts into one verdict per feature, with provenance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvminfo.features.hyperv_tables import ALL_FEATURES
from kvminfo.model import FeatureVerdict, Support

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def combine(evidence: Mapping[str, Mapping[str, Support]],
            features: Iterable[str] = ALL_FEATURES,
            reasons: Mapping[str, Mapping[str, str]] | None = None) -> tuple[FeatureVerdict, ...]:
    """Supported when at least one evidence says supported and none that knows
    the feature says unsupported; unsupported when any says so; otherwise
    unknown. Evidence that says UNKNOWN (or nothing) does not count.
    ``reasons`` (evidence -> feature -> why) is carried into each verdict."""
    reasons = reasons or {}
    verdicts = []
    for name in features:
        said_by = {source: said[name] for source, said in evidence.items()
                   if said.get(name, Support.UNKNOWN) is not Support.UNKNOWN}
        if Support.UNSUPPORTED in said_by.values():
            support = Support.UNSUPPORTED
        elif Support.SUPPORTED in said_by.values():
            support = Support.SUPPORTED
        else:
            support = Support.UNKNOWN
        why = {source: said[name] for source, said in reasons.items() if name in said}
        verdicts.append(FeatureVerdict(name, support, said_by, why))
    return tuple(verdicts)
