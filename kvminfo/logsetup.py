"""Logging for the commands: one line per event on stderr, quiet unless something happened."""

from __future__ import annotations

import logging
import sys

# The outputs (kvminfo.output.*) log what they wrote or left alone at INFO.
OUTPUT_LOGGER = "kvminfo.output"


def configure_logging(verbose: bool = False, output_lines: bool = False) -> None:
    """WARNING and up on stderr (DEBUG with ``verbose``); ``output_lines``: also the
    outputs' INFO lines (what was written and why), a writer command's own output."""
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.WARNING,
                        format="kvminfo %(levelname)s: %(message)s")
    if output_lines and not verbose:
        logging.getLogger(OUTPUT_LOGGER).setLevel(logging.INFO)
