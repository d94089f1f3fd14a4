"""Device plugin configuration: YAML file + flags -> validated, immutable resources.

The flags are applied to the file's raw document first, and the result is
validated once. Every problem is a ConfigError (a KvminfoError) that names the
field (``resources[1].slots``), or the flag when the value came from one
(``--slots``), so a bad config stops start-up with one line instead of a crash
loop later.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvminfo.common.errors import KvminfoError
from kvminfo.common.k8snames import DNS_SUBDOMAIN_MAX, is_dns_subdomain, is_qualified_name

DEFAULT_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
DEFAULT_CDI_DIR = Path("/var/run/cdi")
# Our own domain: KubeVirt advertises devices.kubevirt.io/kvm, and two plugins
# registering one name would replace each other in the kubelet.
DEFAULT_RESOURCE = "devices.kvminfo.io/kvm"
KUBEVIRT_RESOURCE = "devices.kubevirt.io/kvm"
DEFAULT_DEVICE = "/dev/kvm"
# /dev/kvm is shared: every VM opens it, nothing is used up. The count only
# caps how many containers on one node may hold the resource at once, so it
# must never be the limit. KubeVirt's 110 equals the kubelet's default maxPods
# and silently becomes the limit on nodes configured for more pods (up to 250
# is common, some run 500+). 1000 is above any maxPods we know of and keeps
# the ListAndWatch message small (~25 KB, far below gRPC's 4 MB limit).
DEFAULT_SLOTS = 1000
MAX_SLOTS = 100_000
# The mode of each device node in the container in CDI mode (the CDI spec's deviceNodes[].fileMode,
# specs-go/config.go since CDI v0.3.0). Without one, CDI >= v1.1.0 copies the host node's mode
# (pkg/cdi/container-edits_unix.go fillMissingInfo, commit 457489d), older libraries leave it to
# runc (0666): 0600 or 0666 by runtime version. 0666 makes a non-root pod's open() work everywhere;
# the device cgroup still limits the node to the pods it was allocated to.
DEFAULT_CDI_FILE_MODE = 0o666
MAX_POLL_INTERVAL_S = 86400
DEFAULT_METRICS_PORT = 9710
MAX_DEVICE_ID = 63  # the kubelet's limit on Device.ID
# The kubelet reads ListAndWatch with grpc-go's default receive limit: no MaxCallRecvMsgSize
# is set in its device plugin client (../shared/corpus/kubelet/FACTS.md, K1 + K4).
MAX_GRPC_MESSAGE = 4 * 1024 * 1024
MAX_UNIX_SOCKET_PATH = 107  # sun_path is 108 bytes including the final NUL
DEFAULT_METRICS_ADDRESS = "0.0.0.0"
CONFIG_VERSION = "v1"  # optional `version:` field; the only version so far

# CDI kind = vendor/class; both start with an ASCII letter, continue with letters, digits,
# '_', '.', '-' and end with a letter or digit (container-device-interface
# pkg/parser/parser.go validateVendorOrClassName; ../shared/corpus/cdi/FACTS.md "Name rules").
_CDI_VENDOR_OR_CLASS = re.compile(r"^[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?\Z")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_PERMISSIONS = re.compile(r"^(?!.*(.).*\1)[rwm]{1,3}\Z")  # any of r, w, m, each once



class ConfigError(KvminfoError):
    """One bad value: ``field`` (``resources[0].slots``, or a flag) and what is wrong with it."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class MountSpec:
    host_path: str
    container_path: str
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    """One unit of a resource: device nodes handed out together. ``name`` is the
    readable prefix of its slot IDs and its CDI device name."""

    name: str
    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResourceConfig:
    name: str
    groups: tuple[DeviceGroup, ...]
    slots: int = DEFAULT_SLOTS  # per group
    permissions: str = "rw"
    mounts: tuple[MountSpec, ...] = ()
    envs: tuple[tuple[str, str], ...] = ()
    cdi: bool = False
    cdi_kind: str = ""  # "" -> the resource name
    cdi_file_mode: int | None = DEFAULT_CDI_FILE_MODE  # None: no fileMode in the spec (the runtime decides)

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device node of the resource, once, in config order."""
        return tuple(dict.fromkeys(p for g in self.groups for p in g.paths))

    @property
    def allocation(self) -> str:
        """The key of the Allocate policy (kvminfo_plugin.devices.allocation.POLICIES) this resource uses."""
        return "cdi" if self.cdi else "deviceSpec"

    @property
    def effective_cdi_kind(self) -> str:
        return self.cdi_kind or self.name

    @property
    def socket_name(self) -> str:
        """Socket file in the plugin dir: unique per resource, readable in `ls`."""
        return "kvminfo-" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.name) + ".sock"


@dataclass(frozen=True, slots=True)
class PluginConfig:
    resources: tuple[ResourceConfig, ...]
    plugin_dir: Path = DEFAULT_PLUGIN_DIR
    cdi_dir: Path = DEFAULT_CDI_DIR
    metrics_port: int = DEFAULT_METRICS_PORT  # 0: no HTTP endpoint
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    poll_interval_s: float = 5.0


def path_slug(path: str) -> str:
    """/dev/net/tun -> dev-net-tun: a stable, readable prefix for slot IDs and CDI names."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "root"
    budget = MAX_DEVICE_ID - 7  # room for "-" + 5 digits + margin
    if len(slug) > budget:  # keep IDs within 63 chars, unique, and ending in the node's own name
        digest = hashlib.sha256(path.encode()).hexdigest()[:8]
        slug = f"{digest}-{slug[-(budget - 9):].lstrip('-')}"
    return slug


# ---- validation of single values (pure) -------------------------------------------------


def extended_resource_name_problem(name: str) -> str | None:
    """Why the kubelet's Register would refuse ``name``, or None.

    The kubelet accepts an extended resource name (k8s.io/kubernetes
    pkg/apis/core/v1/helper IsExtendedResourceName, called by the device manager's
    Register; ../shared/corpus/kubelet/FACTS.md K6): it is not native (it has a
    '/' and does not contain 'kubernetes.io/' anywhere: a plain substring test, so
    'notkubernetes.io/kvm' is native too), does not start with 'requests.', and
    'requests.' + name is a qualified name (apimachinery IsQualifiedName: one '/',
    a DNS-1123 subdomain prefix of at most 253 characters, a name part of at most
    63 characters)."""
    if "/" not in name:
        return "must be <domain>/<name>"
    if "kubernetes.io/" in name:
        return "names containing 'kubernetes.io/' are native resources, refused by the kubelet"
    if name.startswith("requests."):
        return "names starting with 'requests.' are reserved for quotas"
    if name.count("/") != 1:
        return "must be <domain>/<name> with one '/'"
    domain, short = name.split("/")
    if not is_dns_subdomain("requests." + domain):  # what the kubelet validates
        return (f"domain {domain!r} is not a DNS subdomain (lower case, digits, '-', '.') "
                f"of at most {DNS_SUBDOMAIN_MAX - len('requests.')} characters")
    if not is_qualified_name(short):
        return f"name {short!r} must be 1-63 characters of letters, digits, '-', '_', '.', starting and ending alphanumeric"
    return None


def cdi_kind_problem(kind: str) -> str | None:
    """Why a CDI runtime would refuse ``kind`` (vendor/class), or None."""
    vendor, slash, cls = kind.partition("/")
    if not slash or "/" in cls:
        return "must be <vendor>/<class> with one '/'"
    for part, text in (("vendor", vendor), ("class", cls)):
        if not _CDI_VENDOR_OR_CLASS.match(text):
            return (f"CDI {part} {text!r} must start with a letter, end with a letter or digit, "
                    "and hold only letters, digits, '_', '.', '-'")
    return None


def _shown(key: Any) -> str:
    """A config key as it may appear in a one-line message: YAML keys can be ints or hold newlines."""
    return key if isinstance(key, str) and key.isprintable() else repr(key)


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(where, message)


def _typed(value: Any, kind: type | tuple[type, ...], where: str, expected: str) -> Any:
    # bool is an int in Python; a YAML `slots: true` must not pass as 1.
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(where, f"expected {expected}, got {value!r}")
    _require(isinstance(value, kind), where, f"expected {expected}, got {value!r}")
    return value


def _known_fields(raw: dict[Any, Any], known: set[str], where: str) -> None:
    unknown = sorted(map(_shown, set(raw) - known))
    prefix = f"{where}." if where else ""
    _require(not unknown, f"{prefix}{unknown[0] if unknown else ''}", f"unknown field (known: {', '.join(sorted(known))})")


def _seconds(value: Any, where: str) -> float:
    seconds = _typed(value, (int, float), where, "seconds")
    _require(isinstance(seconds, float) or abs(seconds) < 2 ** 53, where, f"{seconds} is out of range")  # float() overflows
    return float(seconds)


def _absolute_path(value: Any, where: str) -> str:
    path = _typed(value, str, where, "an absolute path")
    _require(path.startswith("/") and "\0" not in path, where, f"expected an absolute path, got {path!r}")
    return path


# ---- one resource -----------------------------------------------------------------------

_RESOURCE_FIELDS = {"name", "devices", "groups", "slots", "permissions", "mounts", "envs", "cdi", "cdiKind",
                    "cdiFileMode"}
_OCTAL_MODE = re.compile(r"0?[0-7]{3}")


def _resource(raw: Any, where: str) -> ResourceConfig:
    raw = _typed(raw, dict, where, "a mapping")
    _known_fields(raw, _RESOURCE_FIELDS, where)
    name = _typed(raw.get("name"), str, f"{where}.name", "an extended resource name like devices.kvminfo.io/kvm")
    problem = extended_resource_name_problem(name)
    _require(problem is None, f"{where}.name", f"{name!r}: {problem}")
    slots = _typed(raw.get("slots", DEFAULT_SLOTS), int, f"{where}.slots", "an integer")
    _require(1 <= slots <= MAX_SLOTS, f"{where}.slots", f"must be 1..{MAX_SLOTS}, got {slots}")
    permissions = _typed(raw.get("permissions", "rw"), str, f"{where}.permissions", "a string of r, w, m")
    _require(bool(_PERMISSIONS.match(permissions)), f"{where}.permissions", f"must be any of r, w, m (each once), got {permissions!r}")
    cdi = _typed(raw.get("cdi", False), bool, f"{where}.cdi", "true or false")
    cdi_kind = _typed(raw.get("cdiKind", ""), str, f"{where}.cdiKind", "vendor/class")
    if cdi_kind:
        _require(cdi_kind_problem(cdi_kind) is None, f"{where}.cdiKind", f"{cdi_kind!r}: {cdi_kind_problem(cdi_kind)}")
    file_mode = _file_mode(raw.get("cdiFileMode", DEFAULT_CDI_FILE_MODE), f"{where}.cdiFileMode")
    # Device specs (DeviceSpec) carry no mode: the runtime copies the host node's, so the field would do nothing.
    _require(cdi or "cdiFileMode" not in raw, f"{where}.cdiFileMode",
             "only with cdi: true (without CDI the container's node has the host's mode; a runtime with "
             "device_ownership_from_security_context gives it to the pod's user)")
    return ResourceConfig(name=name, groups=_groups(raw, where), slots=slots, permissions=permissions,
                          mounts=_mounts(raw.get("mounts", []), f"{where}.mounts"),
                          envs=_envs(raw.get("envs", {}), f"{where}.envs"), cdi=cdi, cdi_kind=cdi_kind,
                          cdi_file_mode=file_mode)


def _file_mode(value: Any, where: str) -> int | None:
    """An octal mode like 0666 (YAML reads it as the number 438) or "0666", or null for none."""
    if value is None:
        return None
    if isinstance(value, str):
        _require(bool(_OCTAL_MODE.fullmatch(value)), where, f"expected an octal mode like \"0666\", got {value!r}")
        return int(value, 8)
    mode = _typed(value, int, where, "an octal mode like 0666, or null")
    _require(0 <= mode <= 0o777, where, f"must be 0000..0777 in octal (write it with a leading 0, like 0666), got {mode}")
    return int(mode)


def _groups(raw: dict[Any, Any], where: str) -> tuple[DeviceGroup, ...]:
    """``devices: [a, b]`` is one group holding both nodes (a unit hands out all of them);
    ``groups: [{devices: [a]}, {devices: [b]}]`` are independent units, each with its own slots."""
    _require(("devices" in raw) != ("groups" in raw), where, "give either devices (one group) or groups, not both"
             if "devices" in raw else "needs devices (one group of nodes) or groups (several)")
    if "devices" in raw:
        return (_group(raw["devices"], f"{where}.devices"),)
    listed = _typed(raw["groups"], list, f"{where}.groups", "a list of {devices: [...]}")
    _require(bool(listed), f"{where}.groups", "must list at least one group")
    groups = []
    for i, item in enumerate(listed):
        at = f"{where}.groups[{i}]"
        item = _typed(item, dict, at, "a mapping with devices")
        _known_fields(item, {"devices"}, at)
        groups.append(_group(item.get("devices"), f"{at}.devices"))
    seen: dict[str, int] = {}
    for i, group in enumerate(groups):
        for path in group.paths:
            _require(path not in seen, f"{where}.groups[{i}].devices", f"{path} is already in groups[{seen.get(path)}]")
            seen[path] = i
    names = [g.name for g in groups]
    clash = next((i for i, n in enumerate(names) if names.index(n) != i), None)
    _require(clash is None, f"{where}.groups[{clash}]", f"gives the same slot IDs as groups[{names.index(names[clash or 0])}]")
    return tuple(groups)


def _group(raw: Any, where: str) -> DeviceGroup:
    listed = _typed(raw, list, where, "a list of device paths")
    _require(bool(listed), where, "must list at least one device path")
    paths = tuple(_absolute_path(d, f"{where}[{i}]") for i, d in enumerate(listed))
    _require(len(set(paths)) == len(paths), where, "lists a path twice")
    return DeviceGroup(name=path_slug(paths[0]), paths=paths)


def _mounts(raw: Any, where: str) -> tuple[MountSpec, ...]:
    mounts = []
    for i, m in enumerate(_typed(raw, list, where, "a list")):
        at = f"{where}[{i}]"
        m = _typed(m, dict, at, "a mapping with hostPath, containerPath, readOnly")
        _known_fields(m, {"hostPath", "containerPath", "readOnly"}, at)
        host = _absolute_path(m.get("hostPath"), f"{at}.hostPath")
        mounts.append(MountSpec(host_path=host, container_path=_absolute_path(m.get("containerPath", host), f"{at}.containerPath"),
                                read_only=_typed(m.get("readOnly", True), bool, f"{at}.readOnly", "true or false")))
    return tuple(mounts)


def _envs(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    envs = []
    for key, value in _typed(raw, dict, where, "a mapping of NAME: value").items():
        at = f"{where}.{_shown(key)}"
        _require(isinstance(key, str) and bool(_ENV_NAME.match(key)), at, "not a valid environment variable name")
        _require(isinstance(value, (str, int, float)) and not isinstance(value, bool), at, f"value must be a string, got {value!r}")
        envs.append((key, str(value)))
    return tuple(sorted(envs))


# ---- the whole document -----------------------------------------------------------------

_TOP_FIELDS = {"version", "resources", "pluginDir", "cdiDir", "metricsPort", "metricsAddress", "pollIntervalSeconds"}


def _document(raw: Any) -> PluginConfig:
    """The document (file content with the flags applied) -> validated PluginConfig."""
    raw = _typed(raw, dict, "config", "a mapping at the top level")
    _known_fields(raw, _TOP_FIELDS, "")
    if "version" in raw:
        _require(raw["version"] == CONFIG_VERSION, "version", f"unsupported config version {raw['version']!r} (known: {CONFIG_VERSION})")
    listed = _typed(raw.get("resources", [_DEFAULT_RESOURCE]), list, "resources", "a list")
    _require(bool(listed), "resources", "must list at least one resource")
    config = PluginConfig(
        resources=tuple(_resource(r, f"resources[{i}]") for i, r in enumerate(listed)),
        plugin_dir=Path(_absolute_path(raw.get("pluginDir", str(DEFAULT_PLUGIN_DIR)), "pluginDir")),
        cdi_dir=Path(_absolute_path(raw.get("cdiDir", str(DEFAULT_CDI_DIR)), "cdiDir")),
        metrics_port=_typed(raw.get("metricsPort", DEFAULT_METRICS_PORT), int, "metricsPort", "a port number (0: off)"),
        metrics_address=_typed(raw.get("metricsAddress", DEFAULT_METRICS_ADDRESS), str, "metricsAddress", "an address"),
        poll_interval_s=_seconds(raw.get("pollIntervalSeconds", 5.0), "pollIntervalSeconds"),
    )
    _check_whole(config)
    return config


_DEFAULT_RESOURCE = {"name": DEFAULT_RESOURCE, "devices": [DEFAULT_DEVICE]}


def _check_whole(config: PluginConfig) -> None:
    names = [r.name for r in config.resources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    _require(not dupes, "resources", f"resource {dupes[0] if dupes else ''!r} is configured twice")
    for i, r in enumerate(config.resources):
        if r.cdi:
            problem = cdi_kind_problem(r.effective_cdi_kind)
            if r.cdi_kind:
                _require(problem is None, f"resources[{i}].cdiKind", f"{r.cdi_kind!r}: {problem}")
            _require(problem is None, f"resources[{i}].name", f"{r.name!r} is not a valid CDI kind ({problem}); set cdiKind")
        size = list_and_watch_bytes(r.groups, r.slots)
        _require(size <= MAX_GRPC_MESSAGE, f"resources[{i}].slots",
                 f"{r.slots} slots x {len(r.groups)} groups make a {size}-byte ListAndWatch message; the kubelet reads at "
                 f"most {MAX_GRPC_MESSAGE} (gRPC's default); at most {max_slots_within_message(r.groups)} slots fit")
    for r in config.resources:
        socket_path = str(config.plugin_dir / r.socket_name).encode()
        _require(len(socket_path) <= MAX_UNIX_SOCKET_PATH, "pluginDir",
                 f"socket path {socket_path.decode()} is {len(socket_path)} bytes; unix sockets allow {MAX_UNIX_SOCKET_PATH}")
    _require(0 <= config.metrics_port <= 65535, "metricsPort", f"must be 0..65535, got {config.metrics_port}")
    # Bounded: Event.wait() raises OverflowError for inf or ~1e20 s, which would kill the health thread.
    _require(0 < config.poll_interval_s <= MAX_POLL_INTERVAL_S, "pollIntervalSeconds",
             f"must be more than 0 and at most {MAX_POLL_INTERVAL_S}, got {config.poll_interval_s}")


# ---- the largest ListAndWatch message ---------------------------------------------------


def slot_id(group: DeviceGroup, index: int, slots: int) -> str:
    """``<group name>-<index>``, the index zero-padded to the width of the largest one."""
    return f"{group.name}-{index:0{len(str(slots - 1))}d}"


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def list_and_watch_bytes(groups: tuple[DeviceGroup, ...], slots: int) -> int:
    """Serialized size of the largest ListAndWatchResponse: every slot listed, all
    ``Unhealthy`` (the longer health string), no topology. Protobuf encoding: each
    string field is a 1-byte tag, a varint length and the bytes; each Device is
    embedded the same way in field 1 of the response."""
    width = len(str(slots - 1))
    total = 0
    for group in groups:
        id_len = len(group.name) + 1 + width
        device = 1 + _varint_len(id_len) + id_len + 1 + 1 + len("Unhealthy")
        total += slots * (1 + _varint_len(device) + device)
    return total


def max_slots_within_message(groups: tuple[DeviceGroup, ...]) -> int:
    low, high = 0, MAX_SLOTS
    while low < high:
        mid = (low + high + 1) // 2
        if list_and_watch_bytes(groups, mid) <= MAX_GRPC_MESSAGE:
            low = mid
        else:
            high = mid - 1
    return low


# ---- flags: applied to the raw document ------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlagOverrides:
    """Flags given on the command line; None/empty means 'not given'."""

    plugin_dir: str | None = None
    cdi_dir: str | None = None
    metrics_port: int | None = None
    resources: tuple[str, ...] = ()  # NAME=PATH[,PATH...]
    slots: int | None = None
    permissions: str | None = None
    cdi: bool | None = None


NO_FLAGS = FlagOverrides()


class _Overlay:
    def __init__(self, document: Any) -> None:
        self.document = document
        self.origin: dict[str, str] = {}  # field -> the flag that set it

    def flag_for(self, field_name: str) -> str | None:
        """The flag behind ``field_name`` or behind the nearest enclosing field."""
        for key in sorted(self.origin, key=len, reverse=True):
            if field_name == key or field_name.startswith((key + ".", key + "[")):
                return self.origin[key]
        return None


def parse_resource_flag(text: str) -> tuple[str, tuple[str, ...]]:
    """``--resource NAME=PATH[,PATH...]`` -> (name, paths)."""
    name, sep, paths = text.partition("=")
    _require(bool(sep) and bool(paths), "--resource", f"expected NAME=PATH[,PATH...], got {text!r}")
    listed = tuple(paths.split(","))
    _require(all(listed), "--resource", f"an empty path in {text!r} (a stray comma?)")
    return name, listed


def _overlay(raw: Any, flags: FlagOverrides) -> _Overlay:
    """Flags win over the file. --resource replaces the file's resources;
    --slots/--permissions/--cdi apply to every resource."""
    if not isinstance(raw, dict):
        return _Overlay(raw)  # the document itself is wrong; say that first
    doc = dict(raw)
    overlay = _Overlay(doc)
    for flag, key, value in (("--plugin-dir", "pluginDir", flags.plugin_dir), ("--cdi-dir", "cdiDir", flags.cdi_dir),
                             ("--metrics-port", "metricsPort", flags.metrics_port)):
        if value is not None:
            doc[key] = value
            overlay.origin[key] = flag
    if flags.resources:
        doc["resources"] = [{"name": n, "devices": list(p)} for n, p in map(parse_resource_flag, flags.resources)]
        overlay.origin["resources"] = "--resource"
    per_resource = [(flag, key, value) for flag, key, value in (
        ("--slots", "slots", flags.slots), ("--permissions", "permissions", flags.permissions), ("--cdi", "cdi", flags.cdi))
        if value is not None]
    if per_resource and isinstance(doc.get("resources", []), list):
        resources = list(doc.get("resources", [_DEFAULT_RESOURCE]))
        for i, resource in enumerate(resources):
            if isinstance(resource, dict):
                resources[i] = {**resource, **{key: value for _, key, value in per_resource}}
                overlay.origin.update({f"resources[{i}].{key}": flag for flag, key, _ in per_resource})
        doc["resources"] = resources
    return overlay


def config_from_mapping(raw: Any, flags: FlagOverrides = NO_FLAGS, source: str = "") -> PluginConfig:
    """The config file's content (already parsed; ``{}`` for no file) and the flags -> PluginConfig.

    Raises ConfigError naming the flag for a value that came from a flag, else
    the field, prefixed with ``source`` (the file) when given."""
    overlay = _overlay(raw, flags)
    try:
        return _document(overlay.document)
    except ConfigError as err:
        raise _named(err, overlay, source) from None


def _named(err: ConfigError, overlay: _Overlay, source: str) -> ConfigError:
    flag = overlay.flag_for(err.field)
    if flag is not None:
        return ConfigError(flag, err.problem)
    return ConfigError(f"{source}: {err.field}", err.problem) if source else err


def named_by_origin(err: ConfigError, flags: FlagOverrides, source: str = "") -> ConfigError:
    """``err`` about a top-level field found after validation (the metrics port in use,
    a pluginDir that is a file) named as config_from_mapping names its own: by the flag
    that set the field, else by the file (``source``) and field."""
    return _named(err, _overlay({}, flags), source)


def read_config_file(path: Path) -> Any:
    """The YAML document in ``path`` ({} when empty); a KvminfoError naming the file if unreadable."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise KvminfoError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise KvminfoError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # one line: reader errors span two
        raise KvminfoError(f"{path}:{where} not valid YAML: {problem}") from None
    except (ValueError, OverflowError) as err:  # a constructor or escape refusing a value: 2001-13-45, "\UF00ED36E"
        raise KvminfoError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:  # PyYAML's composer recurses per nesting level
        raise KvminfoError(f"{path}: not valid YAML: nested too deeply") from None
    return {} if raw is None else raw


def load_config_file(path: Path, flags: FlagOverrides = NO_FLAGS) -> PluginConfig:
    return config_from_mapping(read_config_file(path), flags, source=str(path))
