"""The one exception type that reaches the user as a single line."""


class KvminfoError(Exception):
    """A problem the operator must fix (bad input, bad config, missing file).

    The CLI prints ``kvminfo: <message>`` on stderr and exits non-zero; it is
    never shown as a traceback. Messages are one line and name the culprit
    (file, field, option).
    """

    exit_code = 2
