"""Logging for the commands: one line per event on stderr, quiet unless something happened."""

from __future__ import annotations

import logging
import sys


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.WARNING,
                        format="kvminfo %(levelname)s: %(message)s")
