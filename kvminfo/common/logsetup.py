"""The one log set-up of every command and the device plugin: one line per event on stderr,
quiet unless something happened. Libraries only take loggers (logging.getLogger(__name__));
a process's main() calls configure_logging once.

The long-running commands (features-file, publish, device-plugin) take the same three
options (add_logging_arguments): -v (debug), --log-level and --log-format text|json. JSON
is one object per line, ``{"time": RFC 3339 UTC, "level", "logger", "message"}`` (plus
``"exception"`` with a traceback), for log collectors that parse fields.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable

# The outputs (kvminfo.output.*) log what they wrote or left alone at INFO.
OUTPUT_LOGGER = "kvminfo.output"
# The metrics server (kvminfo.common.metrics_http) logs where it listens at INFO.
METRICS_LOGGER = "kvminfo.common.metrics_http"

FORMAT = "kvminfo %(levelname)s: %(message)s"
# The long-running processes (features-file, publish, the device plugin) stamp each line with
# RFC 3339 UTC time: outside a container (systemd, a terminal, a sidecar's log file) nothing else does.
TIMESTAMPED_FORMAT = "%(asctime)s.%(msecs)03dZ " + FORMAT
TIMESTAMP_DATE = "%Y-%m-%dT%H:%M:%S"

# --log-level's names (logging's own levels, in lower case as in the JSON lines' "level")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
TEXT, JSON = "text", "json"


def timestamped_formatter() -> logging.Formatter:
    """``2026-11-29T20:31:58.123Z kvminfo INFO: ...`` (UTC)."""
    formatter = logging.Formatter(TIMESTAMPED_FORMAT, TIMESTAMP_DATE)
    formatter.converter = time.gmtime
    return formatter


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (RFC 3339 UTC, milliseconds), level (lower case),
    logger, message; exception (the traceback text) when the record carries one."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": f"{self.formatTime(record, TIMESTAMP_DATE)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def logging_as_json() -> bool:
    """Whether configure_logging chose JSON lines (the fatal error line follows suit)."""
    return any(isinstance(handler.formatter, JsonFormatter) for handler in logging.getLogger().handlers)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose, --log-level and --log-format, as every long-running command spells them."""
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="log every step on stderr (= --log-level debug)")
    level.add_argument("--log-level", choices=tuple(LEVELS), metavar="LEVEL",
                       help=f"lowest level logged: {', '.join(LEVELS)} (default: warnings and errors, plus "
                            "the process's own INFO lines: what it wrote or registered, and why)")
    parser.add_argument("--log-format", choices=(TEXT, JSON), default=TEXT,
                        help="text: one time-stamped line per event; json: one JSON object per line with time "
                             "(RFC 3339 UTC), level, logger, message (default: %(default)s)")


def configure_from_args(args: argparse.Namespace, info_loggers: Iterable[str] = ()) -> None:
    """configure_logging for a long-running command whose parser has add_logging_arguments."""
    configure_logging(args.verbose, timestamps=True, info_loggers=info_loggers, level=args.log_level,
                      log_format=args.log_format)


def configure_logging(verbose: bool = False, *, timestamps: bool = False, info_loggers: Iterable[str] = (),
                      level: str | None = None, log_format: str = TEXT) -> None:
    """WARNING and up on stderr (DEBUG with ``verbose``, else ``level``: a LEVELS name).
    ``timestamps``: each text line starts with its RFC 3339 UTC time (a long-running process).
    ``info_loggers``: loggers whose INFO lines are the process's own output (what a writer wrote
    and why, the plugin's registrations), shown at the default level too (not when ``level``
    was chosen). ``log_format`` JSON: one JSON object per line (JsonFormatter)."""
    chosen = logging.DEBUG if verbose else LEVELS[level] if level else logging.WARNING
    logging.basicConfig(stream=sys.stderr, level=chosen, format=FORMAT)
    formatter = JsonFormatter() if log_format == JSON else timestamped_formatter() if timestamps else None
    if formatter is not None:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    if not verbose and level is None:
        for name in info_loggers:
            logging.getLogger(name).setLevel(logging.INFO)
