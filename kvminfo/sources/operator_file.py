"""Read a file the operator named on the command line (a domcaps replay, a whitelist config).

Operator input is bounded: `--domcaps-xml /dev/zero` or a wrong multi-GB file
must be one clear error, not a process that reads until it runs out of memory.
"""

from __future__ import annotations

from kvminfo.common.errors import KvminfoError

# Recorded domcapabilities are ~10 KB and whitelist configs a few hundred bytes;
# 4 MiB leaves room for any real file while bounding memory and time.
MAX_OPERATOR_FILE_BYTES = 4 * 1024 * 1024


def read_operator_file(path: str, what: str, max_bytes: int = MAX_OPERATOR_FILE_BYTES) -> str:
    """UTF-8 text of ``path``; any problem -> KvminfoError naming the path and ``what`` it should be."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # one byte more tells "too big" from "exactly the cap"
    except OSError as err:
        raise KvminfoError(f"{path}: cannot read {what}: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise KvminfoError(f"{path}: {what} larger than {max_bytes // (1024 * 1024)} MiB; is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise KvminfoError(f"{path}: {what} is not UTF-8 text (byte {err.start})") from None
