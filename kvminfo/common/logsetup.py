"""The one log set-up of every command and the device plugin: one line per event on stderr,
quiet unless something happened. Libraries only take loggers (logging.getLogger(__name__));
a process's main() calls configure_logging once."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

# The outputs (kvminfo.output.*) log what they wrote or left alone at INFO.
OUTPUT_LOGGER = "kvminfo.output"

FORMAT = "kvminfo %(levelname)s: %(message)s"
# The long-running processes (features-file, publish, the device plugin) stamp each line with
# RFC 3339 UTC time: outside a container (systemd, a terminal, a sidecar's log file) nothing else does.
TIMESTAMPED_FORMAT = "%(asctime)s.%(msecs)03dZ " + FORMAT
TIMESTAMP_DATE = "%Y-%m-%dT%H:%M:%S"


def timestamped_formatter() -> logging.Formatter:
    """``2026-11-29T20:31:58.123Z kvminfo INFO: ...`` (UTC)."""
    formatter = logging.Formatter(TIMESTAMPED_FORMAT, TIMESTAMP_DATE)
    formatter.converter = time.gmtime
    return formatter


def configure_logging(verbose: bool = False, *, timestamps: bool = False, info_loggers: Iterable[str] = ()) -> None:
    """WARNING and up on stderr (DEBUG with ``verbose``). ``timestamps``: each line starts with
    its RFC 3339 UTC time (a long-running process). ``info_loggers``: loggers whose INFO lines
    are the process's own output (what a writer wrote and why, the plugin's registrations),
    shown without ``verbose`` too."""
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.WARNING, format=FORMAT)
    if timestamps:
        formatter = timestamped_formatter()
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    if not verbose:
        for name in info_loggers:
            logging.getLogger(name).setLevel(logging.INFO)
