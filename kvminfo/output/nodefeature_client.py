"""The API-server edge of `kvminfo publish`: get -> create or replace, with retries;
and NodeFeatureOutput, the Output that keeps this node's NodeFeature current.

Uses the official `kubernetes` client (CustomObjectsApi) rather than raw HTTP:
it already handles in-cluster service-account tokens (and their rotation),
kubeconfig contexts, client certificates and exec credential plugins.
This module is imported only by the publish command: the NFD hook path never
loads `kubernetes` (~0.3 s of imports). The object's content is decided by the
pure kvminfo.output.nodefeature.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError as TransportError

from kvminfo.common.backoff import backoff_delay_s
from kvminfo.common.durations import format_duration
from kvminfo.common.errors import KvminfoError, one_line
from kvminfo.model import Report
from kvminfo.output.nodefeature import (
    API_GROUP,
    API_VERSION,
    PLURAL,
    build_nodefeature,
    change_reason,
    object_name,
    owner_reference,
    updated_object,
)

log = logging.getLogger(__name__)

# (connect, read) seconds for one request: a wedged API server costs one bounded wait.
REQUEST_TIMEOUT_S = (5.0, 20.0)
# A 409 means someone wrote between our read and our write; re-reading settles
# it, and more than this many in a row means a fight with another writer.
MAX_CONFLICT_ROUNDS = 5


def _write_options() -> dict[str, Any]:
    """Every write: an explicit JSON Content-Type (kubernetes 37 sends none for
    custom objects and ignores _content_type there; the API server then assumes
    JSON, a proxy in between may not), our field manager name in managedFields,
    and unknown fields refused rather than silently pruned, so a schema
    mismatch with the installed CRD is loud. A fresh dict per call: the
    generated client adds Accept to the headers dict in place."""
    return {"_headers": {"Content-Type": "application/json"}, "field_manager": "kvminfo",
            "field_validation": "Strict", "_request_timeout": REQUEST_TIMEOUT_S}


class PublishError(KvminfoError):
    """An API failure, reported in one line. ``retryable``: may heal by itself
    (RBAC or CRD applied later, API server restarting, token rotated)."""

    exit_code = 1

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Conflict(Exception):
    """409 from the server: our view is stale (update) or someone created it first (create)."""


@dataclass(frozen=True)
class Outcome:
    action: str  # "created" | "replaced" | "unchanged"
    reason: str = ""
    resource_version: str | None = None


def load_api_client(kubeconfig: str | None) -> k8s.ApiClient:
    """--kubeconfig, else in-cluster (service account), else $KUBECONFIG or ~/.kube/config."""
    configuration = k8s.Configuration()
    in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    _check_kubeconfig_files(kubeconfig, in_cluster)
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration, persist_config=False)
    except (ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as err:  # YAMLError: a malformed file
        where = ("in-cluster config (service account token and CA in /var/run/secrets/kubernetes.io/serviceaccount)"
                 if in_cluster else f"--kubeconfig {kubeconfig}" if kubeconfig
                 else "kubeconfig ($KUBECONFIG or ~/.kube/config)")
        raise KvminfoError(f"{where}: cannot load a cluster configuration: {one_line(err)}") from None
    # urllib3 would otherwise retry a refused connection 3 times at once; our
    # own backoff decides when to try again.
    configuration.retries = False
    return k8s.ApiClient(configuration)


def _check_kubeconfig_files(kubeconfig: str | None, in_cluster: bool) -> None:
    """A kubeconfig that is not there is named as such (the client says "Invalid kube-config file")."""
    if in_cluster:
        return
    if kubeconfig is not None:
        if not os.path.exists(kubeconfig):
            raise KvminfoError(f"--kubeconfig {kubeconfig}: no such file")
        _check_is_kubeconfig(kubeconfig, f"--kubeconfig {kubeconfig}")
        return
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if paths:
        present = [os.path.expanduser(p) for p in paths if os.path.exists(os.path.expanduser(p))]
        if not present:
            raise KvminfoError(f"$KUBECONFIG {os.environ['KUBECONFIG']}: no such file; give --kubeconfig, "
                               "or run in a pod (service account)")
        for path in present:
            _check_is_kubeconfig(path, f"$KUBECONFIG {path}")
    elif not os.path.exists(os.path.expanduser("~/.kube/config")):
        raise KvminfoError("no cluster configuration: not in a pod (no $KUBERNETES_SERVICE_HOST), no $KUBECONFIG "
                           "and no ~/.kube/config; give --kubeconfig FILE")
    else:
        _check_is_kubeconfig(os.path.expanduser("~/.kube/config"), "~/.kube/config")


# A kubeconfig with embedded certificates is a few KiB; reading more is no kubeconfig.
MAX_KUBECONFIG_BYTES = 16 << 20


def _check_is_kubeconfig(path: str, where: str) -> None:
    """A file that is not a kubeconfig at all (YAML that is no mapping, such as /etc/passwd) is
    named as such: the client fails on it with "'str' object does not support item assignment".
    A kubeconfig is a YAML mapping (clientcmd's Config: apiVersion, clusters, contexts, users;
    k8s.io/client-go/tools/clientcmd/api/v1)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_KUBECONFIG_BYTES + 1)
    except OSError as err:
        raise KvminfoError(f"{where}: cannot read: {err.strerror or err}") from None
    if len(data) > MAX_KUBECONFIG_BYTES:
        raise KvminfoError(f"{where}: not a kubeconfig (more than {MAX_KUBECONFIG_BYTES >> 20} MiB)")
    try:
        loaded = yaml.safe_load(data)
    except yaml.YAMLError:
        return  # malformed YAML: load_api_client's message quotes the parser's line and column
    if not isinstance(loaded, dict):
        raise KvminfoError(f"{where}: not a kubeconfig (expected a YAML mapping with clusters, contexts and users)")


class NodeFeatureStore:
    """NodeFeature objects in one namespace; every failure becomes PublishError or _Conflict."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.api_client = api_client
        self._api = k8s.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.host = api_client.configuration.host

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            answer = self._api.get_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, name,
                                                            _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as err:
            if err.status == 404 and _names_object(err):
                return None
            raise self._error("get", name, err) from None
        except TransportError as err:
            raise self._unreachable(err) from None
        return self._object("get", name, answer)

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._write("create", body)

    def replace(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._write("update", body)

    def _write(self, verb: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        try:
            if verb == "create":
                answer = self._api.create_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL,
                                                                   dict(body), **_write_options())
            else:
                answer = self._api.replace_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL,
                                                                    name, dict(body), **_write_options())
        except ApiException as err:
            if err.status == 409:
                raise _Conflict(_status_message(err)) from None
            raise self._error(verb, name, err) from None
        except TransportError as err:
            raise self._unreachable(err) from None
        return self._object(verb, name, answer)

    def _object(self, verb: str, name: str, answer: object) -> dict[str, Any]:
        """The client deserialises custom objects to plain JSON values; anything but an object is a broken answer."""
        if not isinstance(answer, dict):
            raise PublishError(f"{verb} {name!r}: the API server at {self.host} answered with "
                               f"{type(answer).__name__}, not an object", retryable=True)
        return answer

    def _unreachable(self, err: object) -> PublishError:
        return PublishError(f"cannot reach the API server at {self.host}: {one_line(err)}", retryable=True)

    def _error(self, verb: str, name: str, err: ApiException) -> PublishError:
        """One line an operator can act on, per status."""
        if not err.status:
            # The client reports TLS and connection failures as status 0.
            return self._unreachable(err.reason or err)
        what = f"{verb} nodefeatures.{API_GROUP} {name!r} in namespace {self.namespace!r}"
        if not _is_status(err):
            return _not_kubernetes(what, self.host, err)
        said = _status_message(err)
        if err.status == 401:
            return PublishError(f"{what}: 401 Unauthorized from {self.host}: the credentials (service account "
                                f"token or kubeconfig user) were not accepted: {said}", retryable=True)
        if err.status == 403:
            return PublishError(f"{what}: 403 Forbidden: {forbidden_cause(said, self.namespace)}: {said}",
                                retryable=True)
        if err.status == 404:
            return PublishError(f"{what}: 404: the NodeFeature CRD (nodefeatures.{API_GROUP}/{API_VERSION}) is "
                                f"not installed; install NFD >= 0.14 or its CRDs: {said}", retryable=True)
        if err.status is not None and err.status >= 500 or err.status == 429:
            return PublishError(f"{what}: API server error {err.status} {err.reason}: {said}", retryable=True)
        return PublishError(f"{what}: rejected with {err.status} {err.reason}: {said}", retryable=False)


# kube-apiserver's forbidden message (endpoints/handlers/responsewriters/errors.go, forbiddenMessage):
# 'User "<user>" cannot <verb> resource "<resource>[/<subresource>]" in API group "<group>" ...'
_RBAC_DENIAL = re.compile(r'cannot (?P<verb>[a-z]+) resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"')
# OwnerReferencesPermissionEnforcement's refusals (kubernetes plugin/pkg/admission/gc/gc_admission.go)
_OWNER_REF_DELETE = "cannot set an ownerRef on a resource you can't delete"
_OWNER_REF_FINALIZERS = "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on"


def forbidden_cause(message: str, namespace: str) -> str:
    """What a 403 Status message says is missing, as the verb and resource to grant: RBAC's own
    denial names them; owner-reference admission's two refusals name a check, not the verb."""
    if _OWNER_REF_DELETE in message:
        return (f"owner-reference admission (OwnerReferencesPermissionEnforcement) requires 'delete' on "
                f"nodefeatures in {namespace!r} to set the owner reference (deploy/nodefeature's Role grants it)")
    if _OWNER_REF_FINALIZERS in message:
        return ("owner-reference admission (OwnerReferencesPermissionEnforcement) requires 'update' on the "
                "owner's finalizers subresource to set blockOwnerDeletion")
    denial = _RBAC_DENIAL.search(message)
    if denial is not None:
        group = denial["group"] or "core"
        return (f"RBAC does not allow '{denial['verb']}' on {denial['resource']} (API group {group}) in "
                f"{namespace!r} (deploy/nodefeature's Role grants get, create, update and delete on nodefeatures)")
    return (f"not allowed; deploy/nodefeature's Role grants get, create, update and delete on nodefeatures in "
            f"{namespace!r}")


def _status(err: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(err.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _is_status(err: ApiException) -> bool:
    """The API server answers every error with a Status object (apimachinery metav1.Status, kind "Status");
    anything else came from something that is not a Kubernetes API server (a web server, a proxy's page)."""
    return _status(err).get("kind") == "Status"


def _not_kubernetes(what: str, host: str, err: ApiException) -> PublishError:
    """One line: the status and reason, the content type, never the body (an HTML page, say)."""
    headers = err.headers or {}
    content_type = (headers.get("Content-Type") or "no content type").split(";")[0].strip()
    return PublishError(f"{what}: {host} answered {err.status} {err.reason or ''} with {content_type}, not a "
                        "Kubernetes Status: is the kubeconfig's server a Kubernetes API server?".replace("  ", " "),
                        retryable=err.status is not None and (err.status >= 500 or err.status == 429))


def _status_message(err: ApiException) -> str:
    """The Status object's message (one line), else the reason; never a raw body."""
    return one_line(_status(err).get("message") or err.reason or "no message")


def _names_object(err: ApiException) -> bool:
    """A 404 for a missing object names it (details.name); a 404 for a
    resource the server does not serve (CRD not installed) does not."""
    details = _status(err).get("details") or {}
    return bool(details.get("name"))


def pod_owner(api_client: k8s.ApiClient, namespace: str, pod: str) -> dict[str, str] | None:
    """The owner reference for our NodeFeature: GET our own pod (core/v1
    pods/<pod> in ``namespace``) and take its controller (owner_reference()).
    None when no controller manages the pod. Failures are PublishError
    (retryable when RBAC, the network or the server may heal)."""
    host = api_client.configuration.host
    what = f"get pods {pod!r} in namespace {namespace!r} (for the NodeFeature's owner reference)"
    try:
        answer = k8s.CoreV1Api(api_client).read_namespaced_pod(pod, namespace, _preload_content=False,
                                                              _request_timeout=REQUEST_TIMEOUT_S)
        # _preload_content=False hands back the urllib3 response (its .data), not the V1Pod the stubs name.
        body = json.loads(answer.data)  # type: ignore[attr-defined]
    except ApiException as err:
        said = _status_message(err)
        if not err.status:
            raise PublishError(f"cannot reach the API server at {host}: {one_line(err.reason or err)}",
                               retryable=True) from None
        if not _is_status(err):
            raise _not_kubernetes(what, host, err) from None
        if err.status == 403:
            raise PublishError(f"{what}: 403 Forbidden: RBAC must allow get on pods in {namespace!r} "
                               f"(deploy/nodefeature's Role): {said}", retryable=True) from None
        if err.status == 404:
            raise PublishError(f"{what}: 404: no such pod; --pod-name (or $POD_NAME, from fieldRef "
                               f"metadata.name) must be this pod's own name: {said}", retryable=False) from None
        raise PublishError(f"{what}: {err.status} {err.reason}: {said}",
                           retryable=err.status >= 500 or err.status in (401, 429)) from None
    except TransportError as err:
        raise PublishError(f"cannot reach the API server at {host}: {one_line(err)}", retryable=True) from None
    except ValueError as err:
        raise PublishError(f"{what}: the answer is not JSON: {one_line(err)}", retryable=True) from None
    if not isinstance(body, dict):
        raise PublishError(f"{what}: the answer is {type(body).__name__}, not an object", retryable=True)
    return owner_reference(body)


def publish_once(store: NodeFeatureStore, desired: Mapping[str, Any]) -> Outcome:
    """Read, compare, write only if changed; on 409 read again (bounded)."""
    name = desired["metadata"]["name"]
    for round_ in range(1, MAX_CONFLICT_ROUNDS + 1):
        existing = store.get(name)
        reason = change_reason(existing, desired)
        if reason is None:
            return Outcome("unchanged", "", (existing or {}).get("metadata", {}).get("resourceVersion"))
        try:
            if existing is None:
                written, action = store.create(desired), "created"
            else:
                written, action = store.replace(updated_object(existing, desired)), "replaced"
        except _Conflict as conflict:
            log.info("%s: 409 conflict (%s); re-reading (round %d of %d)", name, conflict, round_,
                     MAX_CONFLICT_ROUNDS)
            continue
        return Outcome(action, reason, (written.get("metadata") or {}).get("resourceVersion"))
    raise PublishError(f"{name}: still conflicting after {MAX_CONFLICT_ROUNDS} re-reads; another writer keeps "
                       "changing this object", retryable=True)


def publish_with_retries(store: NodeFeatureStore, desired: Mapping[str, Any], retries: int,
                         wait: Callable[[float], bool]) -> Outcome | None:
    """publish_once, retried up to ``retries`` times on retryable errors with
    exponential backoff (1 s, 2 s, 4 s ... capped at 60 s): never a tight loop.

    ``wait(seconds)`` sleeps and returns True when asked to stop (then None is
    returned). The last error is raised when the retries are spent.
    """
    for attempt in range(retries + 1):
        try:
            return publish_once(store, desired)
        except PublishError as err:
            if not err.retryable or attempt == retries:
                raise
            delay = backoff_delay_s(attempt + 1)
            log.warning("%s; retry %d of %d in %s", err, attempt + 1, retries, format_duration(delay))
            if wait(delay):
                return None
    raise AssertionError("unreachable")


class NodeFeatureOutput:
    """This node's NodeFeature object, written only when its content changed (publish_with_retries).

    With ``pod`` (the publisher's own pod), the object gets an owner reference to
    the pod's controller, looked up once (again next round while it fails).
    """

    def __init__(self, store: NodeFeatureStore, node: str, namespace: str, retries: int,
                 pod: str | None = None) -> None:
        self.store, self.node, self.namespace, self.retries, self.pod = store, node, namespace, retries, pod
        self.target = f"{namespace}/{object_name(node)}"
        self._owner: list[dict[str, str] | None] = []  # [] until looked up; [None]: the pod has no controller

    def owner_reference(self) -> dict[str, str] | None:
        if self.pod is None or self._owner:
            return self._owner[0] if self._owner else None
        try:
            self._owner.append(pod_owner(self.store.api_client, self.namespace, self.pod))
        except PublishError as err:  # the labels matter more: publish them, look again next round
            log.warning("%s; publishing without an owner reference for now", err)
            return None
        owner = self._owner[0]
        if owner is None:
            log.info("pod %s/%s has no controller: the NodeFeature gets no owner reference", self.namespace, self.pod)
        else:
            log.info("owner of %s: %s %s (uid %s)", self.target, owner["kind"], owner["name"], owner["uid"])
        return owner

    def write(self, report: Report, one_shot: bool, stop: threading.Event) -> bool:
        desired = build_nodefeature(report, self.node, self.namespace, self.owner_reference())
        outcome = publish_with_retries(self.store, desired, self.retries, stop.wait)
        if outcome is None:
            return False
        if outcome.action == "unchanged":
            log.info("%s unchanged (resourceVersion %s); nothing written", self.target, outcome.resource_version)
        else:
            log.info("%s %s (resourceVersion %s): %s; %d labels", outcome.action, self.target,
                     outcome.resource_version, outcome.reason, len(desired["spec"]["labels"]))
        return True
