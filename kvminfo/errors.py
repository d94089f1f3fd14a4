"""The one exception type that reaches the user as a single line, and the helper that makes one."""


class KvminfoError(Exception):
    """A problem the operator must fix (bad input, bad config, missing file).

    The CLI prints ``kvminfo: <message>`` on stderr and exits non-zero; it is
    never shown as a traceback. Messages are one line and name the culprit
    (file, field, option).
    """

    exit_code = 2


def one_line(err: object) -> str:
    """An exception's message on one line (libraries put newlines in theirs); its type if empty."""
    text = " ".join(str(err).split())
    return text or type(err).__name__
