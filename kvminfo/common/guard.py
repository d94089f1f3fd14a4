"""Run a command as every kvminfo command runs (the `kvminfo` CLI and the device plugin's script):
the operator's errors and a lost stdout are one line on stderr with an exit status, never a traceback."""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from kvminfo.common.errors import KvminfoError, ParseError
from kvminfo.common.logsetup import logging_as_json

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO


class OutputError(Exception):
    """Writing to stdout failed (a full disk, `| head` gone): the output is lost, not a bug."""


class _StdoutGuard:
    """Stands in for sys.stdout and tags its write errors as OutputError.

    Only a failure of stdout itself becomes the one-line "cannot write output";
    any other OSError inside a command is a bug and keeps its traceback.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream  # None: started with fd 1 closed (`cmd >&-`), where Python sets sys.stdout to None

    def _open(self) -> TextIO:
        if self._stream is None:
            raise OutputError(OSError(errno.EBADF, "stdout is closed"))
        return self._stream

    def write(self, text: str) -> int:
        try:
            return self._open().write(text)
        except OSError as err:
            raise OutputError(err) from err

    def flush(self) -> None:
        if self._stream is None:  # nothing written, nothing to flush
            return
        try:
            self._stream.flush()
        except OSError as err:
            raise OutputError(err) from err

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush of the unwritten rest
    does not print "Exception ignored ... BrokenPipeError" (as Python's signal docs advise)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (pytest's capture), or closed
        pass


def _say(prog: str, message: str) -> None:
    """The one error line: ``<prog>: <message>``; a JSON line (logger ``prog``, level error)
    when the command already logs JSON (--log-format json), so a log collector parses every line."""
    if logging_as_json():
        logging.getLogger(prog.replace(" ", ".")).error("%s", message)
    else:
        print(f"{prog}: {message}", file=sys.stderr)


def run_guarded(prog: str, command: Callable[[], int]) -> int:
    """Run ``command`` (returning an exit status) as every kvminfo command runs: a failed
    write to stdout -> "<prog>: cannot write output: ..." and 1; the operator's input or
    environment (KvminfoError, ParseError) -> "<prog>: <message>" and its exit code; Ctrl-C -> 130.
    Never a traceback for those."""
    stdout = sys.stdout
    sys.stdout = _StdoutGuard(stdout)
    try:
        try:
            status = command()
        except SystemExit:  # argparse after --help or a usage error: flush what it printed, too
            sys.stdout.flush()
            raise
        except (KvminfoError, ParseError) as err:  # the operator's input or environment: one line, never a traceback
            sys.stdout.flush()
            _say(prog, str(err))
            return err.exit_code
        except KeyboardInterrupt:
            return 130
        sys.stdout.flush()  # a buffered write fails here, not in the interpreter's exit
        return status
    except OutputError as err:
        cause = err.args[0]
        _discard_stdout()
        _say(prog, f"cannot write output: {cause.strerror or cause}")
        return 1
    finally:
        sys.stdout = stdout
