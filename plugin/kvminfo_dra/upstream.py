"""Everything the DRA driver takes from the other kvminfo packages, in one place.

The driver shares the labeller's probe (one source of facts for labels and
device attributes) and the device plugin's CDI spec writer; when those packages
move a module, only this file follows.
"""

from __future__ import annotations

from kvminfo.collect import collect
from kvminfo.commands.options import options_for_families
from kvminfo.common.argparsing import command_parser, usage_error
from kvminfo.common.atomic import write_atomic
from kvminfo.common.durations import DurationError, parse_duration
from kvminfo.common.errors import KvminfoError, one_line
from kvminfo.common.k8snames import DNS_LABEL_MAX, DNS_SUBDOMAIN_MAX, is_dns_label, is_dns_subdomain
from kvminfo.common.logsetup import configure_logging
from kvminfo.common.stopping import StopOnSignal
from kvminfo.features.hyperv_tables import ALL_FEATURES
from kvminfo.model import ProbeOptions, Report, Status, Support
from kvminfo.output.nodefeature_client import load_api_client
from kvminfo.sources.facts import KVM, LIBVIRT
from kvminfo_plugin.config import DeviceGroup, ResourceConfig
from kvminfo_plugin.devices.cdi import SpecKeeper, build_spec, encode, qualified_name, remove_specs, spec_path

__all__ = [
    "ALL_FEATURES", "DNS_LABEL_MAX", "DNS_SUBDOMAIN_MAX", "KVM", "LIBVIRT", "DeviceGroup", "DurationError", "KvminfoError", "ProbeOptions",
    "Report", "ResourceConfig", "SpecKeeper", "Status", "StopOnSignal", "Support", "build_spec", "collect",
    "command_parser", "configure_logging", "encode", "is_dns_label", "is_dns_subdomain", "load_api_client",
    "one_line", "options_for_families", "parse_duration", "qualified_name", "remove_specs", "spec_path", "usage_error", "write_atomic",
]
