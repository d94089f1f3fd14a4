"""One argument parser construction for every `kvminfo` command (and the device plugin).

argparse's own ``error()`` prints the whole usage block (5-7 lines) before the
message; here a usage error is one line on stderr, ``<prog>: error: <message>
(see <prog> --help)``, exit status 2 as argparse's (and POSIX utilities') usage
errors have. ``--help`` is unchanged.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn

USAGE_ERROR = 2  # argparse's status for a usage error


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage error is one line: ``<prog>: error: <message> (see <prog> --help)``."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # argparse's messages may wrap; the line must not
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The parser of one command: its description and examples shown verbatim by --help."""
    return OneLineErrorParser(prog=prog, description=description, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)


def usage_error(prog: str, message: str) -> int:
    """The same one line for usage errors found outside a parser (the dispatcher); returns the exit status."""
    print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
    return USAGE_ERROR
