"""Typed facts of the kernel whitelist source. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class WhitelistFacts:
    """The kernel whitelist (kvm-version-info): os-release ID, running kernel
    release, the features whose checks passed (sorted), the config's absolute path."""

    os_id: str
    kernel_version: str
    whitelisted: list[str]
    config: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
