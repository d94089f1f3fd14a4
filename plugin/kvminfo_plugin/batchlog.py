"""Log lines written in batches by one writer thread, so the one audit line per
allocation stays cheap for the gRPC threads that make it.

A plain StreamHandler formats, writes and flushes each record in the thread
that logs it: in the middle of an Allocate, the format (time stamp, %-args)
and the write(2) that releases the GIL to the other server threads cost the
plugin 15-30% more CPU per Allocate than a bare grpcio server
(bench/bench_allocation.py; without the line it was even; with the record
made but not formatted, +0-7%). Here the logging thread only appends the
record; the first record of a batch wakes the writer thread, which waits
``GATHER_S`` (20 ms) for more, formats them all and writes them with one write
and one flush. The records' arguments are formatted then, not when logged: the
plugin logs strings and numbers, which do not change meanwhile. While nothing
is logged the writer sleeps with no timeout (no idle wakeups).

``flush()`` (also called by ``logging.shutdown()``, at every exit but SIGKILL)
writes what is pending before it returns: a line reaches stderr at most 20 ms
late, and only a SIGKILL within those 20 ms loses it. A logging thread that
finds ``MAX_PENDING`` lines waiting (the stream is blocked, e.g. a full pipe)
writes them itself, so memory stays bounded and the old backpressure holds.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

MAX_PENDING = 10_000
GATHER_S = 0.02  # how long a line may wait for others to share its write


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    def __init__(self, stream: TextIO, gather_s: float = GATHER_S) -> None:
        super().__init__(stream)
        self._gather_s = gather_s
        self._records: list[logging.LogRecord] = []
        self._queued = threading.Condition(threading.Lock())  # guards _records
        self._write_lock = threading.Lock()  # every write, and the take of records before it
        self._writer = threading.Thread(target=self._write_forever, name="log-writer", daemon=True)
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """As Handler.handle, without the handler's lock: emit() has its own."""
        passed = bool(self.filter(record))
        if passed:
            self.emit(record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        with self._queued:
            self._records.append(record)
            if len(self._records) == 1:
                self._queued.notify()  # the first record of a batch wakes the writer
            blocked = len(self._records) >= MAX_PENDING
        if blocked:
            self.flush()

    def flush(self) -> None:
        """Format and write every record logged so far, in order, before returning."""
        with self._write_lock:
            with self._queued:
                records, self._records = self._records, []
            lines = []
            for record in records:
                try:
                    lines.append(self.format(record) + self.terminator)
                except Exception:  # noqa: BLE001 - logging's own rule: a bad record never raises
                    self.handleError(record)
            if not lines:
                return
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stderr: nowhere left to say it
                pass

    def _write_forever(self) -> None:
        while True:
            with self._queued:
                while not self._records:
                    self._queued.wait()  # no timeout: asleep until a record comes
            time.sleep(self._gather_s)  # records logged meanwhile go out with it
            self.flush()


def batch_stream_handlers(logger: logging.Logger) -> None:
    """Replace each plain StreamHandler of ``logger`` by a BatchingStreamHandler on the
    same stream, with the same formatter, level and filters."""
    for index, handler in enumerate(list(logger.handlers)):
        if type(handler) is logging.StreamHandler:
            batching = BatchingStreamHandler(handler.stream)
            batching.setFormatter(handler.formatter)
            batching.setLevel(handler.level)
            batching.filters = list(handler.filters)
            logger.handlers[index] = batching
