"""Pure: Node Feature Discovery's rules for label keys and values.

A key is ``[prefix/]name``; without a prefix NFD files it under
feature.node.kubernetes.io. Namespaces under kubernetes.io are denied except
feature.node.kubernetes.io and profile.node.kubernetes.io (and their
sub-namespaces, <x>.feature.node.kubernetes.io). The name, and a
non-empty value, are at most 63 characters of
``([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`` (Kubernetes' qualified name).
A leading "/" (the 2019 hooks' output) is rejected by modern NFD.
"""

from __future__ import annotations

import re

from kvminfo.common.k8snames import DNS_SUBDOMAIN, DNS_SUBDOMAIN_MAX, QUALIFIED_NAME, QUALIFIED_NAME_MAX

DEFAULT_PREFIX = "feature.node.kubernetes.io"
ALLOWED_KUBERNETES_NAMESPACES = frozenset({"feature.node.kubernetes.io", "profile.node.kubernetes.io"})
_ALLOWED_SUB_NAMESPACE_SUFFIXES = tuple(f".{ns}" for ns in sorted(ALLOWED_KUBERNETES_NAMESPACES))
MAX_NAME = QUALIFIED_NAME_MAX
MAX_VALUE = QUALIFIED_NAME_MAX
MAX_PREFIX = DNS_SUBDOMAIN_MAX

_NAME = QUALIFIED_NAME
_DNS_SUBDOMAIN = DNS_SUBDOMAIN
_DISALLOWED_RUN = re.compile(r"[^-A-Za-z0-9_.]+")
_EDGE_JUNK = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


class LabelError(ValueError):
    """A key or value NFD would reject; the message says why."""


def is_denied_namespace(prefix: str) -> bool:
    """NFD's rule (pkg/apis/nfd/validate/validate.go Label, v0.19): kubernetes.io and its
    subdomains are denied except feature.node.kubernetes.io, profile.node.kubernetes.io and
    their sub-namespaces (``<x>.feature.node.kubernetes.io``, ``<x>.profile.node.kubernetes.io``)."""
    in_kubernetes_io = prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io")
    allowed = prefix in ALLOWED_KUBERNETES_NAMESPACES or prefix.endswith(_ALLOWED_SUB_NAMESPACE_SUFFIXES)
    return in_kubernetes_io and not allowed


def check_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        raise LabelError(f"label {key!r}: leading '/' (NFD rejects it)")
    if prefix:
        if "/" in prefix:
            raise LabelError(f"label {key!r}: more than one '/'")
        if len(prefix) > MAX_PREFIX or not _DNS_SUBDOMAIN.fullmatch(prefix):
            raise LabelError(f"label {key!r}: prefix {prefix!r} is not a DNS subdomain")
        if is_denied_namespace(prefix):
            raise LabelError(f"label {key!r}: namespace {prefix!r} is denied (kubernetes.io)")
    if len(name) > MAX_NAME:
        raise LabelError(f"label {key!r}: name longer than {MAX_NAME} characters")
    if not _NAME.fullmatch(name):
        raise LabelError(f"label {key!r}: name {name!r} must be alphanumerics, '-', '_', '.' "
                         "starting and ending alphanumeric")


def check_value(key: str, value: str) -> None:
    if len(value) > MAX_VALUE:
        raise LabelError(f"label {key!r}: value longer than {MAX_VALUE} characters")
    if value and not _NAME.fullmatch(value):
        raise LabelError(f"label {key!r}: value {value!r} must be alphanumerics, '-', '_', '.' "
                         "starting and ending alphanumeric")


def check_label(key: str, value: str) -> None:
    """Raise LabelError unless NFD would accept ``key=value`` as a label."""
    check_key(key)
    check_value(key, value)


def full_key(key: str) -> str:
    """The node label NFD makes of ``key`` (default prefix when none)."""
    return key if "/" in key else f"{DEFAULT_PREFIX}/{key}"


def sanitize_value(raw: str) -> str | None:
    """A valid label value made from an outside string (e.g. a libvirt CPU
    model): runs of disallowed characters become '-', the ends are trimmed to
    alphanumerics, at most 63 characters. None when nothing usable is left."""
    value = _EDGE_JUNK.sub("", _DISALLOWED_RUN.sub("-", raw))
    value = _EDGE_JUNK.sub("", value[:MAX_VALUE])
    return value or None
