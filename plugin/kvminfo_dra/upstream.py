"""Everything the DRA driver takes from the other kvminfo packages, in one place.

The driver shares the labeller's probe (one source of facts for labels and
device attributes) and the device plugin's CDI spec writer; other helpers
restructure those packages, so their module paths are named here only.
"""

from __future__ import annotations

from kvminfo.argparsing import command_parser, usage_error
from kvminfo.collect import collect
from kvminfo.errors import KvminfoError, one_line
from kvminfo.features.hyperv_tables import ALL_FEATURES
from kvminfo.k8snames import DNS_LABEL_MAX, DNS_SUBDOMAIN_MAX, is_dns_label, is_dns_subdomain
from kvminfo.logsetup import configure_logging
from kvminfo.model import Report, Status, Support
from kvminfo.output.atomic import write_atomic
from kvminfo.output.nodefeature_client import load_api_client
from kvminfo.probe_options import ProbeOptions, options_for_families
from kvminfo.record import replace
from kvminfo.sources.facts import KVM, LIBVIRT
from kvminfo.stopping import StopOnSignal
from kvminfo_plugin.cdi import SpecKeeper, build_spec, encode, qualified_name, remove_specs, spec_path
from kvminfo_plugin.config import DeviceGroup, ResourceConfig

__all__ = [
    "ALL_FEATURES", "DNS_LABEL_MAX", "DNS_SUBDOMAIN_MAX", "KVM", "LIBVIRT", "DeviceGroup", "KvminfoError", "ProbeOptions",
    "Report", "ResourceConfig", "SpecKeeper", "Status", "StopOnSignal", "Support", "build_spec", "collect",
    "command_parser", "configure_logging", "encode", "is_dns_label", "is_dns_subdomain", "load_api_client",
    "one_line", "options_for_families", "qualified_name", "remove_specs", "replace", "spec_path", "usage_error", "write_atomic",
]
