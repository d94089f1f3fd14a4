"""NFD's label rules, written for the soak suite independently of kvminfo.labels.nfd.

From the facts in the project notes (labels.md, "NFD's contract today"): a key
is ``[prefix/]name``; no prefix means feature.node.kubernetes.io; kubernetes.io
namespaces are denied except feature.node.kubernetes.io and
profile.node.kubernetes.io; the name, and a non-empty value, are at most 63
characters from [A-Za-z0-9-_.], first and last alphanumeric. A prefix is a DNS
subdomain (Kubernetes' label-key rule): at most 253 characters, dot-separated
parts of [a-z0-9-] that start and end alphanumeric. A leading '/' is rejected.

Deliberately character-by-character rather than regular expressions, so a
mistake in the product's regexes cannot be mirrored here.
"""

from __future__ import annotations

import string

ALNUM = frozenset(string.ascii_letters + string.digits)
NAME_CHARS = ALNUM | frozenset("-_.")
DNS_CHARS = frozenset(string.ascii_lowercase + string.digits + "-")
ALLOWED_K8S_NAMESPACES = ("feature.node.kubernetes.io", "profile.node.kubernetes.io")


def _qualified_name_problem(text: str) -> str | None:
    if not text:
        return "empty"
    if len(text) > 63:
        return f"{len(text)} characters (max 63)"
    if text[0] not in ALNUM or text[-1] not in ALNUM:
        return "must start and end with [A-Za-z0-9]"
    bad = sorted({c for c in text if c not in NAME_CHARS})
    return f"characters {bad!r} not allowed" if bad else None


def _prefix_problem(prefix: str) -> str | None:
    if len(prefix) > 253:
        return "prefix longer than 253"
    for part in prefix.split("."):
        if not part or part[0] == "-" or part[-1] == "-" or any(c not in DNS_CHARS for c in part):
            return f"prefix {prefix!r} is not a DNS subdomain"
    if (prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io")) and prefix not in ALLOWED_K8S_NAMESPACES:
        return f"namespace {prefix!r} is denied"
    return None


def nfd_rejects(key: str, value: str) -> str | None:
    """Why NFD would reject ``key=value`` as a node label, or None if it would accept it."""
    if key.count("/") > 1:
        return "more than one '/'"
    prefix, _, name = key.rpartition("/") if "/" in key else ("", "", key)
    if "/" in key:
        if not prefix:
            return "leading '/'"
        problem = _prefix_problem(prefix)
        if problem:
            return problem
    problem = _qualified_name_problem(name)
    if problem:
        return f"name: {problem}"
    if value:
        problem = _qualified_name_problem(value)
        if problem:
            return f"value: {problem}"
    return None


def assert_nfd_accepts(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        problem = nfd_rejects(key, value)
        assert problem is None, f"NFD would reject {key!r}={value!r}: {problem}"
