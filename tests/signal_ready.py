"""Wait until a child process catches a signal, instead of sleeping a guessed start-up time.

A test that starts kvminfo and signals it "after 1 s" meets the signal's
default action (SIGTERM: killed, exit -15; SIGINT: Python's KeyboardInterrupt,
exit 130) whenever the interpreter is still importing, as it is on a loaded
2-core machine (seen in the fresh-machine check, issue 11). The kernel says
when a handler is in place: bit (signum - 1) of ``SigCgt`` in
/proc/PID/status (proc(5)); or when the signal is blocked (``SigBlk``, the
main thread's mask): then it stays pending until the process takes it with
sigwait() (the device plugin does, from the start of its main()).
"""

from __future__ import annotations

import signal
import subprocess
import time


def catches(pid: int, signum: int) -> bool:
    """True when ``pid`` has a handler for ``signum`` or blocks it (False once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("SigCgt:", "SigBlk:")) and int(line.split()[1], 16) >> (signum - 1) & 1:
                    return True
    except FileNotFoundError:
        pass
    return False


def wait_until_catching(process: subprocess.Popen, signum: int = signal.SIGTERM, timeout_s: float = 60.0) -> None:
    """Return once ``process`` catches ``signum``, or has exited (its exit status then tells why);
    AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and not catches(process.pid, signum):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {process.pid} installed no {signal.Signals(signum).name} handler "
                                 f"within {timeout_s:g} s")
        time.sleep(0.01)
