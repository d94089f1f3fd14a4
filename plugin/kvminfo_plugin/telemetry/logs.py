"""The plugin's log helpers: errno names in OS errors, no gRPC core lines, and
repeated failures rate-limited (the log set-up itself is kvminfo.common.logsetup's)."""

from __future__ import annotations

import errno
import os

# gRPC core (C++, absl logging) writes its own lines to stderr, e.g.
# "E1129 18:55:34.183139 5285 add_port.cc:83] Failed to add port ...": the same
# failure the plugin reports in one line of its own. GRPC_VERBOSITY=NONE silences
# them; it is read when grpc is first imported, so it must be set before that.
GRPC_QUIET = {"GRPC_VERBOSITY": "NONE"}

REPEAT_EVERY_S = 60.0  # an unchanged failure is logged again at most this often



def quiet_grpc_core(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Silence gRPC core's own stderr lines unless the operator asked for them."""
    for key, value in GRPC_QUIET.items():
        environ.setdefault(key, value)


def errno_text(err: OSError) -> str:
    """``ENOENT (No such file or directory)``: the errno name an operator can search for."""
    name = errno.errorcode.get(err.errno or 0)
    return f"{name} ({err.strerror})" if name else str(err.strerror or err)


class FailureLog:
    """Decides which failures of one repeating operation get a line: the first, any
    whose reason differs from the last one logged, and an unchanged one at most every
    ``every_s`` seconds (saying how many were not logged)."""

    def __init__(self, every_s: float = REPEAT_EVERY_S) -> None:
        self._every_s = every_s
        self._reason = ""
        self._logged_at = 0.0
        self.unlogged = 0
        self.failures = 0

    def failed(self, reason: str, now: float) -> str | None:
        """The suffix to log with this failure, or None to stay quiet."""
        self.failures += 1
        if reason != self._reason or now - self._logged_at >= self._every_s:
            skipped, self.unlogged = self.unlogged, 0
            self._reason, self._logged_at = reason, now
            return f" ({skipped} more like it not logged)" if skipped else ""
        self.unlogged += 1
        return None

    def succeeded(self) -> int:
        """Reset; returns how many failures came before this success."""
        failures = self.failures
        self._reason, self.unlogged, self.failures = "", 0, 0
        return failures
