"""`kvminfo publish`: create or update this node's NodeFeature object.

NFD >= 0.14's master reads NodeFeature objects (nfd.k8s-sigs.io/v1alpha1)
from the API server, so this path needs no file on the host and no NFD
worker configuration. `kubernetes` is imported only here (via
kvminfo.output.nodefeature_client), never on the hook path.
"""

from __future__ import annotations

import argparse
import os
from functools import partial

from kvminfo.collect import collect
from kvminfo.commands.options import (
    add_loop_arguments,
    add_probe_arguments,
    check_loop_arguments,
    loop_metrics,
    options_for_families,
    probe_options_from_args,
)
from kvminfo.common.argparsing import command_parser
from kvminfo.common.backoff import MAX_BACKOFF_S, backoff_total_s
from kvminfo.common.durations import format_duration, parse_duration
from kvminfo.common.errors import KvminfoError
from kvminfo.common.logsetup import METRICS_LOGGER, OUTPUT_LOGGER, configure_from_args
from kvminfo.common.stopping import StopOnSignal
from kvminfo.output import periodic
from kvminfo.output.nodefeature import check_namespace, check_node_name, object_name, published_features_text

DEFAULT_RETRIES = 5
MAX_RETRIES = 100
# A shorter interval would re-probe and hit the API server in a tight loop.
MIN_INTERVAL_S = 1

DESCRIPTION = """\
Probe this node and create or update its NodeFeature object
(nfd.k8s-sigs.io/v1alpha1, named kvminfo-<node>, labelled
nfd.node.kubernetes.io/node-name=<node>) for NFD >= 0.14's master.
spec.labels holds the same labels `kvminfo labels` prints; spec.features holds
the raw facts for NodeFeatureRules to match on (a family's sets only when that
--family is chosen; an absent element means not known):
{features}

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
SIGINT exits 0 at once (a one-shot run stopped before it published exits 1).

Durations: a number of seconds (60) or 90s, 10m, 1h30m, 1d; every time
option takes the same syntax."""

EXAMPLES = """\
examples:
  kvminfo publish --node-name "$(hostname)" --namespace kvminfo --kubeconfig ~/.kube/config
  kvminfo publish --interval 10m     # in a DaemonSet: NODE_NAME, POD_NAMESPACE from the downward API"""


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = command_parser(prog, DESCRIPTION.format(features=published_features_text()), EXAMPLES)
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
    add_loop_arguments(parser)
    add_probe_arguments(parser)
    return parser


def _from_option_or_env(value: str | None, option: str, env: str, hint: str) -> str:
    value = value or os.environ.get(env, "").strip()
    if not value:
        raise KvminfoError(f"no {option[2:].replace('-', ' ')}: give {option} or set {env} ({hint})")
    return value


def main(argv: list[str], prog: str = "kvminfo publish") -> int:
    args = build_parser(prog).parse_args(argv)
    stop = StopOnSignal()  # first: a SIGTERM during the ~0.3 s of kubernetes imports is a stop, not a kill
    configure_from_args(args, info_loggers=(OUTPUT_LOGGER, METRICS_LOGGER))  # what was written: its output
    # The flags first, then what may come from the environment (a DaemonSet's downward API).
    interval_s = parse_duration(args.interval, "--interval", MIN_INTERVAL_S) if args.interval is not None else None
    check_loop_arguments(args, interval_s)
    if not 0 <= args.retries <= MAX_RETRIES:
        raise KvminfoError(f"--retries {args.retries}: must be between 0 and {MAX_RETRIES} (the backoff is capped at "
                           f"{format_duration(MAX_BACKOFF_S)}: {MAX_RETRIES} retries already wait about "
                           f"{format_duration(backoff_total_s(MAX_RETRIES))} per round)")
    options = options_for_families(probe_options_from_args(args))
    node = check_node_name(_from_option_or_env(args.node_name, "--node-name", "NODE_NAME",
                                               "in a DaemonSet: env from fieldRef spec.nodeName"))
    namespace = check_namespace(_from_option_or_env(args.namespace, "--namespace", "POD_NAMESPACE",
                                                    "in a DaemonSet: env from fieldRef metadata.namespace"))
    object_name(node)  # a node name too long for the object's name fails before any import

    # Imported here so that a bad option above fails before ~0.3 s of kubernetes imports.
    from kvminfo.output.nodefeature_client import NodeFeatureOutput, NodeFeatureStore, load_api_client

    api_client = load_api_client(args.kubeconfig)
    pod = (args.pod_name or os.environ.get("POD_NAME", "")).strip() or None
    output = NodeFeatureOutput(NodeFeatureStore(api_client, namespace), node, namespace, args.retries, pod)
    with loop_metrics(args, interval_s, options) as metrics:
        return periodic.run(output, partial(collect, options), interval_s, stop, metrics)
