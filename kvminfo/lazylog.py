"""Loggers for the NFD hook's path that import logging only when there is something to say.

NFD starts the hook every minute on every node; importing the standard
library's logging costs ~6 ms of a ~11 ms budget (bench/bench_hook.py), and a
healthy node's hook logs nothing. The modules on that path (collect, the
source runner, the KVM source, probe_options) take their logger from
``get_logger``; the rest of kvminfo uses logging directly.

A ``LazyLogger`` is logging's Logger for those modules, with its calls
(debug, info, warning, error and isEnabledFor, with ``exc_info``):
- once ``logging`` has been imported by anyone (a command's configure_logging,
  pytest, the device plugin), every call goes straight to
  ``logging.getLogger(name)``, with logging's own levels and handlers;
- before that, a record below WARNING is dropped without importing logging
  (nothing has asked for more: ``-v`` and the long-running commands configure
  logging first), and a WARNING or above imports logging;
- the first record handed to logging finds it configured as every command
  configures it (kvminfo.logsetup.configure_logging: one line on stderr), or
  configures it so when no handler would show the logger's records
  (``Logger.hasHandlers()``: logging imported by a library or a .pth file but
  never set up). A program that gave the ``kvminfo`` logger (or root) a
  handler of its own keeps it, and its logging stays as it set it.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs ~3 ms of the NFD hook's start; only mypy needs it
if TYPE_CHECKING:
    import logging

# logging's level numbers (fixed by its documentation); WARNING is what an unconfigured command shows
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40


class LazyLogger:
    """logging.getLogger(name), imported on first use that needs it (see the module docstring)."""

    __slots__ = ("name", "_logger")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _real(self, level: int) -> logging.Logger | None:
        """The logging.Logger to hand a record of ``level`` to, or None to drop it without importing logging."""
        if self._logger is None:
            if "logging" not in sys.modules and level < WARNING:
                return None
            import logging

            if not logging.getLogger(self.name).hasHandlers():  # nothing would show the record (logging's own walk)
                from kvminfo.logsetup import configure_logging

                configure_logging()
            self._logger = logging.getLogger(self.name)
        return self._logger

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        if "logging" not in sys.modules:
            return level >= WARNING
        logger = self._real(level)
        return logger is not None and logger.isEnabledFor(level)

    def _emit(self, level: int, msg: str, args: tuple[object, ...], exc_info: bool) -> None:
        logger = self._real(level)
        if logger is not None:  # stacklevel 3: the record names the caller of debug()/warning()/...
            logger.log(level, msg, *args, exc_info=exc_info, stacklevel=3)

    def debug(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(DEBUG, msg, args, exc_info)

    def info(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(INFO, msg, args, exc_info)

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(WARNING, msg, args, exc_info)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self._emit(ERROR, msg, args, exc_info)


def get_logger(name: str) -> LazyLogger:
    """The lazy stand-in for ``logging.getLogger(name)`` (module loggers on the NFD hook's path)."""
    return LazyLogger(name)
