"""Run `kvminfo` with one KVM ioctl failing, as a flaky or broken kernel would.

    python -m soak.ioctl_faults EINTR KVM_CHECK_EXTENSION once -- labels --no-libvirt

The fault is injected at the lowest layer only (kvminfo.sources.ioctl.ioctl,
the one function that issues ioctls): the real /dev/kvm answers every other
call, and everything above runs unchanged, in a real process with real stderr.
``once`` fails the first call of that request (a signal arriving mid-call);
``always`` fails every call of it (a broken device).
"""

from __future__ import annotations

import errno
import sys

from kvminfo import cli
from kvminfo.sources import ioctl as kvm_ioctl


def failing_ioctl(error: int, request: int, mode: str):
    real = kvm_ioctl.ioctl
    failed = 0

    def ioctl(fd: int, req: int, arg: int | bytearray = 0) -> int:
        nonlocal failed
        if req == request and (mode == "always" or failed == 0):
            failed += 1
            # InterruptedError for EINTR, as fcntl.ioctl raises it (OSError maps errno to subclasses)
            raise OSError(error, f"injected {errno.errorcode[error]}")
        return real(fd, req, arg)
    return ioctl


def main(argv: list[str]) -> int:
    error_name, request_name, mode, separator, *rest = argv
    assert separator == "--" and mode in ("once", "always"), __doc__
    kvm_ioctl.ioctl = failing_ioctl(getattr(errno, error_name), getattr(kvm_ioctl, request_name), mode)
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
