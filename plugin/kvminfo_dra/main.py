"""`kvminfo dra-driver`: options -> DriverConfig -> Driver in the foreground (or --uninstall)."""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path

from kvminfo_dra.apiserver import ResourceApi
from kvminfo_dra.attributes import DRIVER
from kvminfo_dra.driver import DEFAULT_OTHERS, Driver, DriverConfig, uninstall
from kvminfo_dra.upstream import (
    DurationError,
    KvminfoError,
    ProbeOptions,
    StopOnSignal,
    command_parser,
    configure_logging,
    is_dns_label,
    is_dns_subdomain,
    load_api_client,
    parse_duration,
)
from kvminfo_dra.validation import MAX_DEVICES

log = logging.getLogger("kvminfo_dra")

DESCRIPTION = f"""\
A node-local Dynamic Resource Allocation driver ({DRIVER}) for KVM. It publishes
this node's /dev/kvm as a ResourceSlice device whose attributes are the node's
virtualization facts (the same probe as the NFD labels: KVM API version, CPU
vendor, host-model, nested, SEV/SEV-ES/SEV-SNP/TDX/SGX, TSC, max vCPUs, libvirt
and QEMU versions, Hyper-V enlightenments), plus /dev/net/tun and /dev/vhost-net
when present; registers with the kubelet through <kubelet root>/plugins_registry/;
and prepares claims (dra/v1 and v1beta1 NodePrepareResources) by answering CDI
device IDs of its CDI spec (kind kvm.kvminfo.io/device).

/dev/kvm is one shared device (allowMultipleAllocations, DRAConsumableCapacity, on
by default since Kubernetes 1.36); where that feature is off, --exclusive-kvm-devices N
publishes N devices instead. SIGTERM: the sockets go, the slices stay (the next
instance republishes them; the kubelet deletes them 30 s after the last instance).
--uninstall deletes this node's slices and the CDI spec."""

EXAMPLES = """\
examples:
  kvminfo dra-driver --node-name "$NODE_NAME"
  kvminfo dra-driver --node-name n1 --exclusive-kvm-devices 110   # DRAConsumableCapacity off
  kvminfo dra-driver --node-name n1 --uninstall"""


class RegistrationRefused(KvminfoError):
    exit_code = 1  # not a usage error: the kubelet's answer


def _probe_interval(text: str) -> float:
    """--probe-interval: the same duration syntax as every kvminfo time option (docs/cli.md,
    "Durations and bounds": 60, 90s, 10m, 1h30m), above zero, at most a day."""
    try:
        return float(parse_duration(text, "--probe-interval", maximum_s=86400))
    except DurationError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration greater than 0 and at most 1d; "
                                         "e.g. 60 (seconds), 90s, 10m") from None


def _exclusive(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= MAX_DEVICES:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number from 0 to {MAX_DEVICES} (one slice)")
    return int(text)


def _device(text: str) -> tuple[str, str]:
    name, eq, path = text.partition("=")
    if not eq or not is_dns_label(name) or not path.startswith("/dev/"):
        raise argparse.ArgumentTypeError(f"{text!r} must be NAME=/dev/PATH with NAME a DNS label (e.g. tpm=/dev/tpm0)")
    return name, path


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = command_parser(prog, DESCRIPTION, EXAMPLES)
    parser.add_argument("--node-name", default=os.environ.get("NODE_NAME"), metavar="NAME",
                        help="this node's name, the pool's and every slice's spec.nodeName (default $NODE_NAME)")
    parser.add_argument("--kubelet-root", type=Path, default=Path("/var/lib/kubelet"), metavar="DIR",
                        help="the kubelet's --root-dir (default /var/lib/kubelet)")
    parser.add_argument("--cdi-dir", type=Path, default=Path("/var/run/cdi"), metavar="DIR",
                        help="where the CDI spec is written (default /var/run/cdi)")
    parser.add_argument("--kubeconfig", metavar="FILE", help="default: in-cluster, else $KUBECONFIG or ~/.kube/config")
    parser.add_argument("--instance", default=os.environ.get("POD_UID", ""), metavar="ID",
                        help="part of the socket names, so that two pods of a rolling update do not share one "
                             "(default $POD_UID)")
    parser.add_argument("--exclusive-kvm-devices", type=_exclusive, default=0, metavar="N",
                        help="publish kvm-0..kvm-N-1, each allocatable once, instead of one shared device "
                             "(for clusters without DRAConsumableCapacity); default 0: shared")
    parser.add_argument("--device", type=_device, action="append", default=[], metavar="NAME=PATH",
                        help="another character device to publish when present, shared (repeatable); "
                             f"tun and vhost-net ({', '.join(p for _, p in DEFAULT_OTHERS.values())}) always are")
    parser.add_argument("--kvm-device", default="/dev/kvm", metavar="PATH", help="default /dev/kvm")
    parser.add_argument("--libvirt-uri", default="qemu:///system", metavar="URI", help="default qemu:///system")
    parser.add_argument("--no-libvirt", action="store_true", help="do not ask libvirt (fewer attributes)")
    parser.add_argument("--probe-interval", type=_probe_interval, default=60.0, metavar="DURATION",
                        help="probe the facts again this often (seconds, or e.g. 90s, 10m); a change is a new "
                             "pool generation (default 60s)")
    parser.add_argument("--uninstall", action="store_true", help="delete this node's slices and the CDI spec, then exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def config_from(args: argparse.Namespace, prog: str) -> DriverConfig:
    if not args.node_name or not is_dns_subdomain(args.node_name):
        given = f"--node-name {args.node_name!r}" if args.node_name else "no node name"
        raise KvminfoError(f"{given}: must be this node's name (a DNS subdomain); "
                           "set --node-name or $NODE_NAME (the DaemonSet passes spec.nodeName)")
    instance = args.instance
    if instance and not all(c.isalnum() or c in "-_." for c in instance):
        raise KvminfoError(f"--instance {instance!r}: letters, digits, '-', '_' and '.' only (it names sockets)")
    others = dict(DEFAULT_OTHERS)
    for name, path in args.device:
        if name == "kvm" or name.startswith("kvm-"):
            raise KvminfoError(f"--device {name}={path}: the names kvm and kvm-N are the driver's own")
        others[name] = ("char", path)
    probe = ProbeOptions(kvm_path=args.kvm_device, libvirt_uri=args.libvirt_uri, use_libvirt=not args.no_libvirt)
    return DriverConfig(node=args.node_name, kubelet_root=args.kubelet_root, cdi_dir=args.cdi_dir,
                        kvm_path=args.kvm_device, instance=instance, exclusive=args.exclusive_kvm_devices,
                        others=others, probe=probe, probe_interval_s=args.probe_interval)


def main(argv: list[str], prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    configure_logging(args.verbose, timestamps=True, info_loggers=("kvminfo_dra",))
    config = config_from(args, prog)
    api = ResourceApi(load_api_client(args.kubeconfig))
    if args.uninstall:
        for line in uninstall(config, api):
            print(line)
        return 0
    stop = StopOnSignal()
    done = threading.Event()
    stop.wake_on_stop(done)
    driver = Driver(config, api)
    driver.on_refused = done.set
    driver.start()
    try:
        done.wait()
    finally:
        driver.stop()
    if driver.refused:  # the kubelet will not call us: exit non-zero, its reason in the pod's status
        raise RegistrationRefused(f"the kubelet refused the registration: {driver.refused}")
    log.info("stopped on %s", stop.signal_name)
    return 0
