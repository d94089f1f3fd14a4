"""Logging for the commands: one line per event on stderr, quiet unless something happened."""

from __future__ import annotations

import logging
import sys
import time

# The outputs (kvminfo.output.*) log what they wrote or left alone at INFO.
OUTPUT_LOGGER = "kvminfo.output"

FORMAT = "kvminfo %(levelname)s: %(message)s"
# The long-running writers (features-file, publish, the device plugin) stamp each line with
# RFC 3339 UTC time: outside a container (systemd, a terminal, a sidecar's log file) nothing else does.
TIMESTAMPED_FORMAT = "%(asctime)s.%(msecs)03dZ " + FORMAT
TIMESTAMP_DATE = "%Y-%m-%dT%H:%M:%S"


def timestamped_formatter() -> logging.Formatter:
    """``2026-11-29T20:31:58.123Z kvminfo INFO: ...`` (UTC)."""
    formatter = logging.Formatter(TIMESTAMPED_FORMAT, TIMESTAMP_DATE)
    formatter.converter = time.gmtime
    return formatter


def configure_logging(verbose: bool = False, output_lines: bool = False) -> None:
    """WARNING and up on stderr (DEBUG with ``verbose``); ``output_lines``: also the
    outputs' INFO lines (what was written and why), a writer command's own output,
    each line time-stamped as the device plugin's are."""
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.WARNING, format=FORMAT)
    if output_lines:
        formatter = timestamped_formatter()
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
        if not verbose:
            logging.getLogger(OUTPUT_LOGGER).setLevel(logging.INFO)
