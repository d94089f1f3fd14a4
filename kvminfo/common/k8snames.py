"""Pure: the Kubernetes name rules, in one place (labels, NodeFeature names, the plugin's resource names).

From k8s.io/apimachinery/pkg/util/validation (validation.go):
- DNS-1123 subdomain: lowercase alphanumerics, '-' and '.', each dot-separated
  part starting and ending alphanumeric, at most 253 characters (object names,
  node names, label and resource-name prefixes);
- DNS-1123 label: one such part, at most 63 characters (namespace names);
- qualified name part: alphanumerics, '-', '_', '.', starting and ending
  alphanumeric, at most 63 characters (a label key's name, a label value).
Match with ``fullmatch`` (no anchors in the patterns).
"""

from __future__ import annotations

import re

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_SUBDOMAIN_MAX = 253
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_LABEL_MAX = 63
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
QUALIFIED_NAME_MAX = 63


def is_dns_subdomain(text: str) -> bool:
    return 0 < len(text) <= DNS_SUBDOMAIN_MAX and DNS_SUBDOMAIN.fullmatch(text) is not None


def is_dns_label(text: str) -> bool:
    return 0 < len(text) <= DNS_LABEL_MAX and DNS_LABEL.fullmatch(text) is not None


def is_qualified_name(text: str) -> bool:
    return 0 < len(text) <= QUALIFIED_NAME_MAX and QUALIFIED_NAME.fullmatch(text) is not None
