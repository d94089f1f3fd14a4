"""Kernel whitelist source: what kvm-version-info-nfd-plugin did.

A JSON config lists checks {os, feature, kernelminver, kernelmaxver}; a check
passes when os-release ID equals ``os`` and the running kernel lies within
[min, max] (either bound may be absent, not both). Passing features become
kvm-info-version-<feature> labels. A broken config is an operator error
(parse_config raises WhitelistConfigError naming file and field; the source
reports it as a KvminfoError); a check naming a feature we do not label is
one warning and skipped, the others still count (as the original did); the
host files are I/O facts.

Config (the original format; ``osrelease``/``kernversion`` are optional
overrides of the host files, relative to the config file's directory):
  {"osrelease": "/etc/os-release", "kernversion": "/proc/version",
   "checks": [{"os": "centos", "feature": "hyperv", "kernelminver": "3.10.0-957.5.1.el7.x86_64"}]}
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import TYPE_CHECKING

from kvminfo.common.errors import KvminfoError, ParseError
from kvminfo.model import SourceResult, Status
from kvminfo.sources.base import LocalSource
from kvminfo.sources.facts import KERNEL_WHITELIST
from kvminfo.sources.operator_file import read_operator_file
from kvminfo.sources.whitelist_facts import WhitelistFacts

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kvminfo.model import ProbeOptions

log = logging.getLogger(__name__)

FEATURES = ("hyperv", "hyperv-lev2")
# The original's first config format (conf/kvm-info.json of kvm-info-nfd-plugin,
# pkg/kvm-info/features.go) spelled the L2 check "hypervL2"; its later
# versioninfo package renamed it "hyperv-lev2". Both mean the same label.
FEATURE_ALIASES = {"hypervL2": "hyperv-lev2"}
DEFAULT_OS_RELEASE = "/etc/os-release"
DEFAULT_PROC_VERSION = "/proc/version"

_VERSION_PREFIX = re.compile(r"[0-9][0-9.\-]*")


def kernel_version_key(version: str) -> tuple[int, ...]:
    """Comparable key of a kernel release such as ``3.10.0-957.5.1.el7.x86_64``.

    Every number in the leading digits/dots/dashes counts, so distro build
    numbers order as expected (957.5.1 > 957.1.1). The original used
    hashicorp/go-version, which read "-957..." as a pre-release (lower than
    3.10.0 itself): a whitelist of distro kernels is what this format is for,
    so build numbers are compared numerically here.
    """
    match = _VERSION_PREFIX.match(version.strip())
    if not match:
        raise ValueError(f"not a kernel version: {version!r}")
    return tuple(int(n) for n in re.findall(r"[0-9]+", match.group(0)))


class WhitelistConfigError(ParseError):
    """The whitelist config is not usable; the message names the file and the field."""


def _field_error(config_path: str, field: str, problem: str) -> WhitelistConfigError:
    return WhitelistConfigError(f"{config_path}: {field}: {problem}")


def parse_config(text: str, config_path: str) -> dict[str, Any]:
    """Validate the config; every problem names the file and the field."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise WhitelistConfigError(f"{config_path}: not valid JSON (line {err.lineno} column {err.colno}: {err.msg})") from None
    except ValueError as err:  # e.g. an integer literal past Python's 4300-digit limit
        raise WhitelistConfigError(f"{config_path}: not usable JSON: {err}") from None
    except RecursionError:  # json recurses per nesting level: ~1000 nested arrays exhaust the stack
        raise WhitelistConfigError(f"{config_path}: not usable JSON: nested too deeply") from None
    if not isinstance(config, dict):
        raise _field_error(config_path, "(top level)", "must be a JSON object")
    for key in ("osrelease", "kernversion"):
        if key in config and not isinstance(config[key], str):
            raise _field_error(config_path, key, "must be a path string")
    checks = config.get("checks")
    if not isinstance(checks, list):
        raise _field_error(config_path, "checks", "must be a list of checks")
    for i, check in enumerate(checks):
        where = f"checks[{i}]"
        if not isinstance(check, dict):
            raise _field_error(config_path, where, "must be an object")
        for key in ("os", "feature"):
            if not isinstance(check.get(key), str) or not check[key]:
                raise _field_error(config_path, f"{where}.{key}", "missing or not a non-empty string")
        check["feature"] = FEATURE_ALIASES.get(check["feature"], check["feature"])
        bounds = [k for k in ("kernelminver", "kernelmaxver") if check.get(k)]
        if not bounds:
            raise _field_error(config_path, where, "needs kernelminver and/or kernelmaxver")
        version_keys: dict[str, tuple[int, ...]] = {}
        for key in bounds:
            try:
                version_keys[key] = kernel_version_key(str(check[key]))
            except ValueError:
                raise _field_error(config_path, f"{where}.{key}", f"{check[key]!r} is not a kernel version") from None
        if len(version_keys) == 2 and version_keys["kernelminver"] > version_keys["kernelmaxver"]:  # no kernel could ever pass
            raise _field_error(config_path, where, f"kernelminver {str(check['kernelminver'])!r} is above "
                                                   f"kernelmaxver {str(check['kernelmaxver'])!r}; no kernel can match")
    return config


def unknown_feature_warnings(config: dict[str, Any], config_path: str) -> list[str]:
    """One line per check whose feature is not one we label; such a check is skipped.

    The original (kvm-info-nfd-plugin Run()) printed "INVALID check ..., skipped"
    and evaluated the rest, so a config written for a newer or older plugin
    still yields the checks we understand.
    """
    return [f"{config_path}: checks[{i}].feature: {check['feature']!r} is not one of {', '.join(FEATURES)}; "
            "check skipped" for i, check in enumerate(config["checks"]) if check["feature"] not in FEATURES]


def read_os_id(path: str) -> str:
    """os-release ID (quotes stripped); raises OSError/ValueError."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and key == "ID":
                return value.strip().strip("\"'")
    raise ValueError(f"{path}: no ID= line")


def read_kernel_version(path: str) -> str:
    """Third token of /proc/version ("Linux version 6.1.0-13-amd64 ...")."""
    with open(path, encoding="utf-8") as f:
        tokens = f.read().split()
    if len(tokens) < 3:
        raise ValueError(f"{path}: fewer than three tokens")
    return tokens[2]


def whitelisted_features(checks: list[dict[str, Any]], os_id: str, kernel: str) -> list[str]:
    """Pure: the features whose checks this (os, kernel) satisfies, sorted."""
    kernel_key = kernel_version_key(kernel)
    passed = set()
    for check in checks:
        if check["feature"] not in FEATURES or check["os"] != os_id:
            continue
        low, high = check.get("kernelminver"), check.get("kernelmaxver")
        if low and kernel_key < kernel_version_key(str(low)):
            continue
        if high and kernel_key > kernel_version_key(str(high)):
            continue
        passed.add(check["feature"])
    return sorted(passed)


def load_config(config_path: str) -> dict[str, Any]:
    """The operator's config file, validated; any problem -> KvminfoError naming file and field."""
    try:
        return parse_config(read_operator_file(config_path, "whitelist config"), config_path)
    except WhitelistConfigError as err:
        raise KvminfoError(str(err)) from None


class _HostFileUnreadable(Exception):
    """A default host file (/etc/os-release, /proc/version) could not be read."""


def _read_host_file(reader: Callable[[str], str], config_path: str, config: dict[str, Any],
                    field: str, default: str) -> str:
    """Read a host file the config may name (relative to the config's directory).

    A file the config names is the operator's input: unreadable -> KvminfoError
    naming the config and field. The default host file unreadable says
    something about the host instead -> _HostFileUnreadable.
    """
    named = config.get(field)
    path = os.path.join(os.path.dirname(os.path.abspath(config_path)), named) if named else default
    try:
        return reader(path)
    except (OSError, ValueError) as err:  # ValueError: no ID= line, too few tokens, not UTF-8
        reason = f"{path}: {err.strerror}" if isinstance(err, OSError) else str(err)
        if named:
            raise KvminfoError(f"{config_path}: {field}: {reason}") from None
        raise _HostFileUnreadable(reason) from None


def probe_kernel_whitelist(config_path: str) -> SourceResult:
    """Raises KvminfoError for a bad config; default host files that cannot be read -> unavailable."""
    config = load_config(config_path)
    for warning in unknown_feature_warnings(config, config_path):
        log.warning("%s", warning)
    try:
        os_id = _read_host_file(read_os_id, config_path, config, "osrelease", DEFAULT_OS_RELEASE)
        kernel = _read_host_file(read_kernel_version, config_path, config, "kernversion", DEFAULT_PROC_VERSION)
    except _HostFileUnreadable as err:
        return SourceResult(KERNEL_WHITELIST, Status.UNAVAILABLE, str(err))
    try:
        features = whitelisted_features(config["checks"], os_id, kernel)
    except ValueError as err:  # the running kernel's version is not a version
        return SourceResult(KERNEL_WHITELIST, Status.ERROR, str(err))
    log.debug("kernel-whitelist: os=%s kernel=%s whitelisted=%s", os_id, kernel, features)
    return SourceResult(KERNEL_WHITELIST, Status.OK, "",
                        WhitelistFacts(os_id=os_id, kernel_version=kernel, whitelisted=features,
                                       config=os.path.abspath(config_path)))


class KernelWhitelistSource(LocalSource):
    """The kernel whitelist config (--whitelist-config) against os-release and the running kernel."""

    name = KERNEL_WHITELIST

    def probe(self, options: ProbeOptions) -> SourceResult:
        assert options.whitelist_config is not None  # the registry enables this source only with a config
        return probe_kernel_whitelist(options.whitelist_config)

    def summary(self, result: SourceResult) -> str:
        f = result.facts
        assert isinstance(f, WhitelistFacts)
        return f"os {f.os_id}, kernel {f.kernel_version}, whitelisted: {', '.join(f.whitelisted) or 'none'}"


SOURCE = KernelWhitelistSource()
