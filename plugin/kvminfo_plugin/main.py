"""`kvminfo device-plugin`: options -> config -> PluginRuntime in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from kvminfo.common.argparsing import command_parser
from kvminfo.common.logsetup import METRICS_LOGGER, add_logging_arguments, configure_from_args
from kvminfo.common.threads import start_daemon
from kvminfo.common.version import VersionAction
from kvminfo_plugin.config import (
    DEFAULT_CDI_DIR,
    DEFAULT_DEVICE,
    DEFAULT_METRICS_PORT,
    DEFAULT_PLUGIN_DIR,
    DEFAULT_RESOURCE,
    DEFAULT_SLOTS,
    ConfigError,
    FlagOverrides,
    PluginConfig,
    config_from_mapping,
    load_config_file,
    named_by_origin,
)
from kvminfo_plugin.devices.cdi import remove_specs
from kvminfo_plugin.telemetry.logs import quiet_grpc_core

if TYPE_CHECKING:
    from kvminfo_plugin.runtime import PluginRuntime

log = logging.getLogger("kvminfo_plugin")

DESCRIPTION = f"""\
Serve character devices (by default {DEFAULT_DEVICE}) to the kubelet over the
device plugin API v1beta1, so unprivileged pods get them by requesting a
resource (by default {DEFAULT_RESOURCE}: {DEFAULT_SLOTS} shareable slots).

One gRPC server per resource on a unix socket (mode 0600) in the plugin
directory; then Register with the kubelet. A kubelet restart (sockets deleted,
new kubelet.sock), an ended ListAndWatch stream, an absent kubelet or a removed
plugin directory are handled by serving and registering again, with backoff (a
directory is waited for with inotify); the process never
exits because the kubelet is away (it does exit, non-zero, when the kubelet
refuses the registration itself). Device nodes are watched with inotify (and a
slow poll); a node that disappears or has no driver turns its group's slots
Unhealthy. SIGTERM/SIGINT: stop serving, remove the sockets still ours, exit 0.
CDI specs stay (running pods' containers may restart meanwhile); remove them
on uninstall with --remove-cdi-specs.

Flags override the config file. The kubelet's plugin directory is a constant,
/var/lib/kubelet/device-plugins, that does not follow the kubelet's --root-dir
(kubeadm, k3s, RKE2 and microk8s kubelets all serve kubelet.sock there); use
--plugin-dir where a node or a container mounts it elsewhere (the directory
that holds kubelet.sock). The slot count (default {DEFAULT_SLOTS} per device group)
only caps how many containers may hold a group's shared nodes at once."""

EXAMPLES = f"""\
examples:
  kvminfo device-plugin                 # {DEFAULT_DEVICE} as {DEFAULT_RESOURCE}, {DEFAULT_SLOTS} slots
  kvminfo device-plugin --resource devices.kvminfo.io/kvm=/dev/kvm \\
      --resource devices.kvminfo.io/tun=/dev/net/tun --cdi   # two resources, answered with CDI names"""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = command_parser(prog, DESCRIPTION, EXAMPLES)
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="YAML config: version, resources (name, devices or groups, slots, permissions, mounts, envs, cdi, cdiKind, "
                             "cdiFileMode), pluginDir, cdiDir, metricsPort, metricsAddress, pollIntervalSeconds "
                             "(see docs/device-plugin.md)")
    parser.add_argument("--plugin-dir", metavar="DIR",
                        help=f"kubelet device plugin directory holding kubelet.sock (default {DEFAULT_PLUGIN_DIR})")
    parser.add_argument("--cdi-dir", metavar="DIR",
                        help=f"where CDI specs are written for resources with CDI on (default {DEFAULT_CDI_DIR})")
    parser.add_argument("--metrics-port", type=int, metavar="N",
                        help=f"HTTP port for /metrics and /healthz; 0 turns it off (default {DEFAULT_METRICS_PORT})")
    parser.add_argument("--resource", action="append", default=[], metavar="NAME=PATH[,PATH...]",
                        help="advertise these device nodes as resource NAME, one group handed out together (repeatable); "
                             "replaces the config "
                             f"file's resources (default: {DEFAULT_RESOURCE}={DEFAULT_DEVICE})")
    parser.add_argument("--slots", type=int, metavar="N",
                        help=f"shareable slots per device group, for every resource (default {DEFAULT_SLOTS})")
    parser.add_argument("--permissions", metavar="PERMS",
                        help="cgroup device access given to containers: any of r, w, m (default rw)")
    cdi = parser.add_mutually_exclusive_group()
    cdi.add_argument("--cdi", dest="cdi", action="store_true", default=None,
                     help="answer Allocate with CDI device names and write a CDI spec per resource")
    cdi.add_argument("--no-cdi", dest="cdi", action="store_false", help="answer Allocate with device specs (default)")
    parser.add_argument("--remove-cdi-specs", action="store_true",
                        help="uninstall step: remove the CDI specs of the configured CDI resources (only files "
                             "holding a spec of that resource's kind), print one line per file, exit")
    add_logging_arguments(parser)
    parser.add_argument("--version", action=VersionAction)
    return parser


def flag_overrides(args: argparse.Namespace) -> FlagOverrides:
    return FlagOverrides(plugin_dir=args.plugin_dir, cdi_dir=args.cdi_dir, metrics_port=args.metrics_port,
                         resources=tuple(args.resource), slots=args.slots, permissions=args.permissions, cdi=args.cdi)


def config_from_args(args: argparse.Namespace) -> PluginConfig:
    flags = flag_overrides(args)
    return load_config_file(args.config, flags) if args.config else config_from_mapping({}, flags)


# Taken by one thread with sigwait(), never by a handler: a Python signal handler runs
# in the main thread between any two bytecodes, also inside threading.Event.set/clear/
# wait or a logging handler, holding their (non-reentrant) locks; a handler that then
# sets an Event or logs deadlocks the process (found by the plugin bench: SIGTERM right
# after registration, no exit in 10 s).
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def main(argv: list[str], prog: str = "kvminfo device-plugin") -> int:
    args = build_parser(prog).parse_args(argv)
    # Before any thread starts: every thread inherits the mask, so the signals stay
    # pending until the signal thread takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    quiet_grpc_core()  # before anything imports grpc
    # Time-stamped lines, as the other long-running processes'. One line per registration,
    # health change and allocation is the contract, so this package logs at INFO even
    # when the rest of kvminfo is quiet.
    configure_from_args(args, info_loggers=("kvminfo_plugin", METRICS_LOGGER))
    _serve(args)
    return 0


def _stop_on_signal(runtime: PluginRuntime) -> None:
    """The signal thread: wait for SIGTERM/SIGINT, then stop the runtime (in an
    ordinary thread, where taking locks is safe)."""
    signum = signal.sigwait(STOP_SIGNALS)
    log.info("%s received; stopping", signal.Signals(signum).name)
    runtime.stop()


def _serve(args: argparse.Namespace) -> None:
    """Run the plugin until stopped (or, with --remove-cdi-specs, remove the specs and return)."""
    config = config_from_args(args)
    if args.remove_cdi_specs:
        for line in remove_specs(config.cdi_dir, config.resources) or [f"no resource has CDI on; nothing in {config.cdi_dir}"]:
            print(line)
        return

    # Imported here, not at the top: grpc reads GRPC_VERBOSITY (quiet_grpc_core) when it is first imported.
    from kvminfo_plugin.runtime import PluginRuntime

    try:
        runtime = PluginRuntime(config)
    except ConfigError as err:  # metricsPort/metricsAddress cannot be bound, pluginDir is a file
        raise named_by_origin(err, flag_overrides(args), str(args.config) if args.config else "") from None
    start_daemon("signals", _stop_on_signal, runtime)
    log.info("starting: %s in %s", ", ".join(
        f"{r.name}={' '.join('+'.join(g.paths) for g in r.groups)} x{r.slots}{' (CDI)' if r.cdi else ''}"
        for r in config.resources), config.plugin_dir)
    runtime.run()
