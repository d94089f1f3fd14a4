"""`kvminfo publish`: create or update this node's NodeFeature object.

NFD >= 0.14's master reads NodeFeature objects (nfd.k8s-sigs.io/v1alpha1)
from the API server, so this path needs no file on the host and no NFD
worker configuration. `kubernetes` is imported only here (via
kvminfo.publish.client), never on the hook path.
"""

from __future__ import annotations

import argparse
import logging
import os

from kvminfo.commands.labels import options_for_families
from kvminfo.durations import format_duration, parse_duration
from kvminfo.errors import KvminfoError
from kvminfo.labels.render import FAMILIES
from kvminfo.logsetup import configure_logging
from kvminfo.options import add_probe_arguments, probe_options_from_args
from kvminfo.publish.nodefeature import build_nodefeature, check_namespace, check_node_name, object_name
from kvminfo.report import collect
from kvminfo.stopping import StopOnSignal

log = logging.getLogger("kvminfo.publish")

DEFAULT_RETRIES = 5

DESCRIPTION = """\
Probe this node and create or update its NodeFeature object
(nfd.k8s-sigs.io/v1alpha1, named kvminfo-<node>, labelled
nfd.node.kubernetes.io/node-name=<node>) for NFD >= 0.14's master.
spec.labels holds the same labels `kvminfo labels` prints; spec.features holds
the raw facts: flags "kvminfo.hyperv" (supported Hyper-V enlightenments),
attributes "kvminfo.kvm" and "kvminfo.libvirt" (API version, CPU vendor, max
vCPUs, nested, host model, ...), for NodeFeatureRules to match on.

The object is written only when its content changed; a 409 (someone wrote in
between) is re-read and retried. API errors (401, 403, 404 when the CRD is not
installed, 5xx, unreachable server) are logged in one line and retried with
exponential backoff (1s, 2s, 4s, ... at most 60s), --retries times.

Owner: with --pod-name (or $POD_NAME), the object gets an owner reference to
that pod's controller (the DaemonSet), read once from the pod (RBAC: get on
pods), so deleting the DaemonSet deletes the object too. Until the pod can be
read, the object is published without one and the lookup is retried each
round.

Cluster access: in a pod, the service account (in-cluster config); otherwise
--kubeconfig, $KUBECONFIG or ~/.kube/config. Without --interval: publish once
and exit (non-zero if it could not). With --interval: keep running, re-probe
and re-publish every interval; API failures never stop the loop. SIGTERM or
SIGINT exits 0.

Durations: 90s, 10m, 1h, 1h30m, 1d."""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node-name", metavar="NAME",
                        help="this node's Kubernetes name (default: $NODE_NAME; in a DaemonSet set it from "
                             "fieldRef spec.nodeName)")
    parser.add_argument("--namespace", metavar="NS",
                        help="namespace of the NodeFeature object (default: $POD_NAMESPACE)")
    parser.add_argument("--pod-name", metavar="NAME",
                        help="this pod's name, to give the object an owner reference to the pod's controller "
                             "(default: $POD_NAME; in a DaemonSet set it from fieldRef metadata.name; "
                             "neither: no owner reference)")
    parser.add_argument("--kubeconfig", metavar="FILE",
                        help="kubeconfig to use instead of the in-cluster service account "
                             "(default outside a pod: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--interval", metavar="DURATION",
                        help="keep running and re-publish this often; default: publish once and exit")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                        help="retries per round after a retryable API error, with exponential backoff "
                             "(default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step on stderr")
    add_probe_arguments(parser)
    return parser


def _from_option_or_env(value: str | None, option: str, env: str, hint: str) -> str:
    value = value or os.environ.get(env, "").strip()
    if not value:
        raise KvminfoError(f"no {option[2:].replace('-', ' ')}: give {option} or set {env} ({hint})")
    return value


def main(argv: list[str], prog: str = "kvminfo publish") -> int:
    args = build_parser(prog).parse_args(argv)
    configure_logging(args.verbose)
    if not args.verbose:
        logging.getLogger("kvminfo.publish").setLevel(logging.INFO)  # what was written is this command's output
    node = check_node_name(_from_option_or_env(args.node_name, "--node-name", "NODE_NAME",
                                               "in a DaemonSet: env from fieldRef spec.nodeName"))
    namespace = check_namespace(_from_option_or_env(args.namespace, "--namespace", "POD_NAMESPACE",
                                                    "in a DaemonSet: env from fieldRef metadata.namespace"))
    interval_s = parse_duration(args.interval, "--interval") if args.interval is not None else None
    if args.retries < 0:
        raise KvminfoError(f"--retries {args.retries}: must be 0 or more")
    options = options_for_families(probe_options_from_args(args), list(FAMILIES))

    # Imported here so that a bad option above fails before ~0.3 s of kubernetes imports.
    from kvminfo.publish.client import (NodeFeatureStore, PublishError, load_api_client, pod_owner,
                                        publish_with_retries)

    api_client = load_api_client(args.kubeconfig)
    store = NodeFeatureStore(api_client, namespace)
    stop = StopOnSignal()
    name = object_name(node)
    pod = (args.pod_name or os.environ.get("POD_NAME", "")).strip() or None
    owner: list[dict[str, str] | None] = []  # [] until looked up; [None]: the pod has no controller

    def owner_reference() -> dict[str, str] | None:
        if pod is None or owner:
            return owner[0] if owner else None
        try:
            owner.append(pod_owner(api_client, namespace, pod))
        except PublishError as err:  # the labels matter more: publish them, look again next round
            log.warning("%s; publishing without an owner reference for now", err)
            return None
        if owner[0] is None:
            log.info("pod %s/%s has no controller: the NodeFeature gets no owner reference", namespace, pod)
        else:
            log.info("owner of %s/%s: %s %s (uid %s)", namespace, name, owner[0]["kind"], owner[0]["name"],
                     owner[0]["uid"])
        return owner[0]

    def publish_round() -> None:
        desired = build_nodefeature(collect(options), node, namespace, owner_reference())
        if stop.event.is_set():
            return
        outcome = publish_with_retries(store, desired, args.retries, stop.event.wait)
        if outcome is None:
            return
        if outcome.action == "unchanged":
            log.info("%s/%s unchanged (resourceVersion %s); nothing written", namespace, name,
                     outcome.resource_version)
        else:
            log.info("%s %s/%s (resourceVersion %s): %s; %d labels", outcome.action, namespace, name,
                     outcome.resource_version, outcome.reason, len(desired["spec"]["labels"]))

    if interval_s is None:
        publish_round()  # a PublishError here is the exit status (cli.py prints it)
        return 0
    log.info("publishing %s/%s every %s", namespace, name, format_duration(interval_s))
    while not stop.event.is_set():
        try:
            publish_round()
        except PublishError as err:  # the API may come back: keep the loop alive, try next interval
            log.error("%s; next attempt in %s", err, format_duration(interval_s))
        if stop.event.wait(interval_s):
            break
    log.info("stopping on %s", stop.signal_name)
    return 0
