"""The errors that reach the user as a single line, and the helper that makes one."""


class KvminfoError(Exception):
    """A problem the operator must fix (bad input, bad config, missing file).

    The CLI prints ``kvminfo: <message>`` on stderr and exits non-zero; it is
    never shown as a traceback. Messages are one line and name the culprit
    (file, field, option).
    """

    exit_code = 2


class ParseError(ValueError):
    """A pure parser refused its input (domain capabilities XML, a whitelist
    config, a duration, a name). The message is one line naming the input.

    Parsers raise this, never KvminfoError: whose fault it is depends on where
    the text came from. The CLI prints it like a KvminfoError (exit 2, the
    operator's input); a source reading a daemon's answer turns it into that
    source's error status instead.
    """

    exit_code = 2


def one_line(err: object) -> str:
    """An exception's message on one line (libraries put newlines in theirs); its type if empty."""
    text = " ".join(str(err).split())
    return text or type(err).__name__
