"""A local stand-in for the Kubernetes API server, for NodeFeature objects only.

It checks what the real kube-apiserver checks on this path, so that the real
`kubernetes` client can be tested without a cluster:
- authentication: a bearer token (401 otherwise), over HTTPS when given a
  certificate (self_signed_certificate());
- paths: /apis/nfd.k8s-sigs.io/v1alpha1/namespaces/<ns>/nodefeatures[/<name>]
  (anything else: 404 as for an unknown resource);
- verbs: GET (object), POST (collection), PUT (object); others 405;
- content types: JSON request bodies (415 otherwise; a missing Content-Type
  counts as JSON, as the real server's negotiation defaults to its first
  media type) and an Accept header that admits JSON;
- bodies: apiVersion/kind, metadata.name (RFC 1123 subdomain, equal to the
  URL's on PUT), metadata.namespace (equal to the URL's), metadata.labels
  (Kubernetes label syntax), and the NodeFeature CRD's openAPIV3Schema from
  tests/fixtures/nfd/; unknown fields are refused (400) when the request
  asks for fieldValidation=Strict, as the real server does, and otherwise
  accepted (the real server prunes them; the stand-in keeps them);
- optimistic concurrency: create must not carry a resourceVersion, update
  must carry the current one (409 Conflict when stale). The real server
  allows an unconditional update of a custom object without one; the stand-in
  refuses it (422) so that the client is proven to send it.
- metadata.ownerReferences, with apimachinery's ValidateOwnerReferences
  rules (pkg/api/validation/objectmeta.go): apiVersion with a version, kind,
  name and uid all non-empty, no Event as an owner, at most one reference
  with controller: true (422 otherwise);
- pods: GET /api/v1/namespaces/<ns>/pods/<name> of pods added with
  add_daemonset_pod(), which carry the controller reference the DaemonSet
  controller gives its pods (controller and blockOwnerDeletion true).
- authorization, when given ``role`` (the rules of a Role bound to the
  token's user, USER, in its namespace, as deploy/nodefeature/rbac.yaml
  grants them): RBAC's rule matching (apiGroups, resources with
  "resource/subresource" for a subresource, verbs, resourceNames, "*") on
  the request's verb (GET get, POST create, PUT update), answered like
  kube-apiserver's forbidden response (endpoints/handlers/responsewriters:
  'User "u" cannot <verb> resource "r" in API group "g" in the namespace
  "n"', inside apimachinery's NewForbidden message and details);
- with ``owner_reference_admission`` also OwnerReferencesPermissionEnforcement
  (kubernetes plugin/pkg/admission/gc/gc_admission.go, on in OpenShift and
  hardened clusters), on create and update: a request that changes
  metadata.ownerReferences (create: any; update: a different count, or any
  reference not semantically equal, in order) needs `delete` on the object
  itself, else 403 "cannot set an ownerRef on a resource you can't delete";
  a reference whose blockOwnerDeletion becomes true (new, or false/unset
  before, matched by uid) needs `update` on the owner's `finalizers`
  subresource (its kind's resource, its name, the same namespace), else 403
  "cannot set blockOwnerDeletion if an ownerReference refers to a resource
  you can't set finalizers on". The reason and error RBAC gives a denial
  are empty and nil: ": , <nil>", as in the real message.
delete_owner() does what kube-controller-manager's garbage collector then
does (Kubernetes "Owners and Dependents" / "Garbage Collection"): an object
all of whose owners are gone is deleted; an owner counts as present only if
an object of that kind and name exists in the dependent's own namespace
(no cross-namespace owners) with the referenced uid.
Failure answers are Status objects shaped like the real ones: a missing
object's 404 names it in details; an uninstalled CRD's 404 does not.
Faults can be injected: the CRD "not installed", any status for the next
requests, and a concurrent writer that changes the object just before our
next update.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import yaml

GROUP, VERSION, PLURAL, KIND = "nfd.k8s-sigs.io", "v1alpha1", "nodefeatures", "NodeFeature"
SCHEMA_PATH = Path(__file__).resolve().parent / "fixtures" / "nfd" / "nodefeature-v1alpha1.openapi.yaml"
TOKEN = "kvminfo-standin-token"
USER = "system:serviceaccount:kvminfo:kvminfo-publish"  # the token's user (a service account's name)
# Kind -> resource for the owners a NodeFeature may name here (what the REST mapper answers).
_RESOURCES = {("apps", "DaemonSet"): "daemonsets", ("", "Pod"): "pods", ("", "ConfigMap"): "configmaps"}

_PATH = re.compile(rf"/apis/{re.escape(GROUP)}/{VERSION}/namespaces/(?P<ns>[^/]+)/{PLURAL}(?:/(?P<name>[^/]+))?")
_POD_PATH = re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)")
# apimachinery's BannedOwners: Event (core v1 and events.k8s.io/v1)
_BANNED_OWNERS = {("", "Event"), ("events.k8s.io", "Event")}
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_STATUS_TEXT = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                405: "MethodNotAllowed", 409: "Conflict", 415: "UnsupportedMediaType", 422: "Invalid",
                429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


def self_signed_certificate(directory: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throw-away server certificate for ``ip`` (openssl CLI), which is also its own CA."""
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=kvminfo-standin", "-addext", f"subjectAltName=IP:{ip}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def strict(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever it lists properties."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def load_validator(path: Path = SCHEMA_PATH, unknown_fields: bool = False) -> jsonschema.protocols.Validator:
    """The CRD schema; ``unknown_fields=False`` also refuses fields it does not list."""
    schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema if unknown_fields else strict(schema))


def label_problems(labels: Any) -> list[str]:
    """Kubernetes label syntax: [prefix/]name (name <= 63, prefix a DNS subdomain <= 253), value <= 63."""
    if not isinstance(labels, dict):
        return ["metadata.labels: must be a map of strings"]
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
            problems.append(f"metadata.labels: key {key!r}: prefix is not a DNS subdomain")
        if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
            problems.append(f"metadata.labels: key {key!r}: name part is not a valid label name")
        if not isinstance(value, str) or len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
            problems.append(f"metadata.labels: {key}={value!r}: not a valid label value")
    return problems


@dataclass
class Seen:
    method: str
    path: str
    status: int
    query: dict[str, str] = field(default_factory=dict)
    content_type: str = ""
    resource_version: str | None = None  # what the request body carried (writes)


@dataclass
class _Fault:
    status: int
    verbs: frozenset[str]
    message: str
    body: Any = None  # answer with this JSON instead of a Status object


def owner_reference_problems(refs: Any) -> list[str]:
    """apimachinery's ValidateOwnerReferences, message for message where it matters."""
    if refs is None:
        return []
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        return ["metadata.ownerReferences: must be a list of objects"]
    problems, controller = [], ""
    for ref in refs:
        group, _, version = str(ref.get("apiVersion") or "").rpartition("/")
        if not version:
            problems.append(f"metadata.ownerReferences.apiVersion: Invalid value: {ref.get('apiVersion')!r}: "
                            "version must not be empty")
        for key in ("kind", "name", "uid"):
            if not ref.get(key):
                problems.append(f"metadata.ownerReferences.{key}: Invalid value: {ref.get(key)!r}: "
                                f"{key} must not be empty")
        if (group, ref.get("kind")) in _BANNED_OWNERS:
            problems.append(f"metadata.ownerReferences: {group}/{version}, Kind=Event is disallowed from being "
                            "an owner")
        if ref.get("controller") is True:
            if controller:
                problems.append("metadata.ownerReferences: Only one reference can have Controller set to true. "
                                f"Found \"true\" in references for {controller} and {ref.get('kind')}/{ref.get('name')}")
            else:
                controller = f"{ref.get('kind')}/{ref.get('name')}"
    return problems


def _schema_problems(validator: Any, body: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
            for err in validator.iter_errors(body)]


class _Answer(Exception):
    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or {}


_VERBS = {"GET": "get", "POST": "create", "PUT": "update"}


def _forbidden(group: str, resource: str, name: str, why: str) -> _Answer:
    """apimachinery's errors.NewForbidden: '<resource>.<group> "<name>" is forbidden: <why>'
    (no name on a create's collection URL; the core group has no suffix)."""
    qualified = f"{resource}.{group}" if group else resource
    message = f'{qualified} "{name}" is forbidden: {why}' if name else f"{qualified} is forbidden: {why}"
    return _Answer(403, message, {"name": name, "group": group, "kind": resource})


@dataclass
class ApiServerStandin:
    validator: Any = field(default_factory=load_validator)
    lenient_validator: Any = field(default_factory=lambda: load_validator(unknown_fields=True))
    token: str = TOKEN
    crd_installed: bool = True
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve HTTPS like a real API server
    role: list[dict[str, Any]] | None = None  # RBAC rules USER has in role_namespace; None: no authorization
    role_namespace: str = "kvminfo"
    owner_reference_admission: bool = False  # OwnerReferencesPermissionEnforcement

    def __post_init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        # other kinds, for pod look-ups and garbage collection: (apiVersion, kind, namespace, name) -> object
        self.others: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.seen: list[Seen] = []
        self._faults: list[_Fault] = []
        self._before_update: list[Callable[[dict[str, Any]], None]] = []
        self._before_create: list[Callable[[], object]] = []
        self._next_rv = 100
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 uses it
            # Headers and body go out in two writes; with Nagle on, the
            # client's delayed ACK adds ~40 ms to every answer.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # quiet: tests read `seen`
                pass

            def do_GET(self) -> None:
                standin._serve(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="apiserver-standin", daemon=True)

    # -- life cycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.address
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return host, port

    def start(self) -> ApiServerStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_kubeconfig(self, path: Path, token: str | None = None) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "publisher", "user": {"token": token or self.token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "publisher"}}],
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # -- fault injection --------------------------------------------------------------------------
    def fail_next(self, status: int, times: int = 1, verbs: str = "GET POST PUT", message: str = "") -> None:
        """Answer the next ``times`` requests with one of ``verbs`` with ``status``."""
        with self._lock:
            self._faults += [_Fault(status, frozenset(verbs.split()), message or f"injected {status}")] * times

    def answer_next(self, status: int, body: Any, verbs: str = "GET POST PUT") -> None:
        """Answer the next request with one of ``verbs`` with this JSON, whatever it asked."""
        with self._lock:
            self._faults.append(_Fault(status, frozenset(verbs.split()), "", body))

    def concurrent_update_before_next_put(self, change: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Another writer updates the object between our GET and our PUT."""
        with self._lock:
            self._before_update.append(change or (lambda obj: obj["metadata"].setdefault("annotations", {})
                                                  .update({"other-writer": "was-here"})))

    def concurrent_create_before_next_post(self, namespace: str, body: dict[str, Any]) -> None:
        """Another writer creates the object between our GET (404) and our POST."""
        with self._lock:
            self._before_create.append(lambda: self._store(namespace, json.loads(json.dumps(body)), created=True))

    def put_object(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if someone else had created it."""
        with self._lock:
            return self._store(namespace, json.loads(json.dumps(body)), created=True)

    def add_daemonset_pod(self, namespace: str, daemonset: str, pod: str) -> dict[str, Any]:
        """A DaemonSet and one pod of it, as the API server holds them once the
        DaemonSet controller made the pod; returns the pod."""
        with self._lock:
            owner = self.others.setdefault(("apps/v1", "DaemonSet", namespace, daemonset), {
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": daemonset, "namespace": namespace, "uid": str(uuid.uuid4())}})
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": pod, "namespace": namespace, "uid": str(uuid.uuid4()),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": daemonset,
                                     "uid": owner["metadata"]["uid"], "controller": True,
                                     "blockOwnerDeletion": True}]}}
            self.others[("v1", "Pod", namespace, pod)] = body
            return body

    def delete_owner(self, api_version: str, kind: str, namespace: str, name: str) -> list[str]:
        """Delete an object (background propagation) and collect garbage; returns the
        names of the NodeFeature objects the collector deleted."""
        with self._lock:
            self.others.pop((api_version, kind, namespace, name), None)
            for key in [k for k, obj in self.others.items() if self._orphaned(k[2], obj)]:
                del self.others[key]
            gone = [key for key, obj in self.objects.items() if self._orphaned(key[0], obj)]
            for key in gone:
                del self.objects[key]
            return [name for _, name in gone]

    def _orphaned(self, namespace: str, obj: dict[str, Any]) -> bool:
        refs = obj["metadata"].get("ownerReferences") or []
        return bool(refs) and not any(
            (owner := self.others.get((ref["apiVersion"], ref["kind"], namespace, ref["name"]))) is not None
            and owner["metadata"]["uid"] == ref["uid"] for ref in refs)

    def get_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.objects.get((namespace, name))

    def verbs(self) -> list[tuple[str, int]]:
        return [(s.method, s.status) for s in self.seen]

    # -- request handling -------------------------------------------------------------------------
    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        url = urlsplit(request.path)
        path, query = url.path, dict(parse_qsl(url.query))
        carried_rv = None
        try:
            with self._lock:
                status, body, carried_rv = self._handle(request.command, path, query, request.headers, raw)
        except _Answer as answer:
            status, body = answer.status, self._status_body(answer)
        with self._lock:
            self.seen.append(Seen(request.command, path, status, query, request.headers.get("Content-Type", ""),
                                  carried_rv))
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    @staticmethod
    def _status_body(answer: _Answer) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": answer.message, "reason": _STATUS_TEXT.get(answer.status, "Unknown"),
                "details": answer.details, "code": answer.status}

    def _handle(self, verb: str, path: str, query: dict[str, str], headers: Any,
                raw: bytes) -> tuple[int, dict[str, Any], str | None]:
        # The scheme is case-insensitive, as in kube-apiserver's bearer token
        # authenticator (the in-cluster loader sends "bearer <token>").
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.token:
            raise _Answer(401, "Unauthorized")
        pod = _POD_PATH.fullmatch(path)
        match = _PATH.fullmatch(path)
        if pod is None and (match is None or not self.crd_installed):
            raise _Answer(404, "the server could not find the requested resource")
        fault = next((f for f in self._faults if verb in f.verbs), None)
        if fault is not None:
            self._faults.remove(fault)
            if fault.body is not None:
                return fault.status, fault.body, None
            raise _Answer(fault.status, fault.message)
        if pod is not None:
            if verb != "GET":
                raise _Answer(405, f"{verb} is not supported on {path} by the stand-in")
            self._authorize("get", "", "pods", "", pod["ns"], pod["name"])
            found = self.others.get(("v1", "Pod", pod["ns"], pod["name"]))
            if found is None:
                raise _Answer(404, f'pods "{pod["name"]}" not found', {"name": pod["name"], "kind": "pods"})
            return 200, found, None
        assert match is not None
        accept = headers.get("Accept", "")
        if "application/json" not in accept and "*/*" not in accept:
            raise _Answer(406, f"Accept {accept!r} does not admit application/json")
        namespace, name = match["ns"], match["name"]
        if verb in _VERBS:
            self._authorize(_VERBS[verb], GROUP, PLURAL, "", namespace, name or "")
        if verb == "GET" and name:
            return 200, self._existing(namespace, name), None
        if verb == "POST" and not name:
            body = self._body(headers, raw, namespace, query)
            carried = body["metadata"].get("resourceVersion")  # before _store() sets the new one
            self._admit_owner_references(namespace, body, None)
            return 201, self._create(namespace, body), carried
        if verb == "PUT" and name:
            body = self._body(headers, raw, namespace, query)
            carried = body["metadata"].get("resourceVersion")
            self._admit_owner_references(namespace, body, self.objects.get((namespace, name)))
            return 200, self._update(namespace, name, body), carried
        raise _Answer(405, f"{verb} is not supported on {path}")

    # -- authorization and owner-reference admission -------------------------------------------
    def _allowed(self, verb: str, group: str, resource: str, subresource: str, namespace: str, name: str) -> bool:
        """RBAC's rule matching (rbac/v1 PolicyRule) over the Role's rules, in its namespace only."""
        if self.role is None:
            return True
        if namespace != self.role_namespace:
            return False
        wanted = f"{resource}/{subresource}" if subresource else resource

        def has(values: list[str] | None, value: str) -> bool:
            return bool(values) and ("*" in values or value in values)  # type: ignore[operator]

        return any(has(rule.get("apiGroups"), group) and has(rule.get("resources"), wanted)
                   and has(rule.get("verbs"), verb)
                   and (not rule.get("resourceNames") or name in rule["resourceNames"]) for rule in self.role)

    def _authorize(self, verb: str, group: str, resource: str, subresource: str, namespace: str, name: str) -> None:
        if not self._allowed(verb, group, resource, subresource, namespace, name):
            wanted = f"{resource}/{subresource}" if subresource else resource
            raise _forbidden(group, resource, name, f'User "{USER}" cannot {verb} resource "{wanted}" in API '
                                                    f'group "{group}" in the namespace "{namespace}"')

    def _admit_owner_references(self, namespace: str, body: dict[str, Any], old: dict[str, Any] | None) -> None:
        """OwnerReferencesPermissionEnforcement's Validate (gc_admission.go), for NodeFeatures."""
        if not self.owner_reference_admission:
            return
        name = body["metadata"]["name"]
        new_refs = body["metadata"].get("ownerReferences") or []
        old_refs = (old or {}).get("metadata", {}).get("ownerReferences") or []
        # isChangingOwnerReference: create with any; update with another count or any pair unequal, in order
        changing = bool(new_refs) if old is None else new_refs != old_refs
        if not changing:
            return
        if not self._allowed("delete", GROUP, PLURAL, "", namespace, name):
            raise _forbidden(GROUP, PLURAL, name, "cannot set an ownerRef on a resource you can't delete: , <nil>")
        was_blocking = {r.get("uid"): r.get("blockOwnerDeletion") is True for r in old_refs}
        for ref in new_refs:
            if ref.get("blockOwnerDeletion") is True and not was_blocking.get(ref.get("uid"), False):
                group = ref["apiVersion"].rpartition("/")[0]
                resource = _RESOURCES.get((group, ref["kind"]), ref["kind"].lower() + "s")
                if not self._allowed("update", group, resource, "finalizers", namespace, ref["name"]):
                    raise _forbidden(GROUP, PLURAL, name, "cannot set blockOwnerDeletion if an ownerReference "
                                                          "refers to a resource you can't set finalizers on: , <nil>")

    def _existing(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise _Answer(404, f'{PLURAL}.{GROUP} "{name}" not found',
                          {"name": name, "group": GROUP, "kind": PLURAL})
        return obj

    def _body(self, headers: Any, raw: bytes, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        content_type = (headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if content_type != "application/json":
            raise _Answer(415, f"the body of the request was in an unknown format - accepted media types "
                               f"include: application/json (got {content_type!r})")
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise _Answer(400, f"body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise _Answer(400, "body is not a JSON object")
        problems = []
        if body.get("apiVersion") != f"{GROUP}/{VERSION}" or body.get("kind") != KIND:
            problems.append(f"apiVersion/kind must be {GROUP}/{VERSION} {KIND}, "
                            f"got {body.get('apiVersion')!r} {body.get('kind')!r}")
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise _Answer(422, "metadata: Required value")
        name = meta.get("name")
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            problems.append(f"metadata.name: Invalid value: {name!r}: must be a lowercase RFC 1123 subdomain")
        if meta.get("namespace", namespace) != namespace:
            problems.append(f"metadata.namespace: {meta.get('namespace')!r} does not match the request's "
                            f"{namespace!r}")
        problems += label_problems(meta.get("labels", {}))
        problems += owner_reference_problems(meta.get("ownerReferences"))
        problems += _schema_problems(self.lenient_validator, body)
        if not problems and query.get("fieldValidation") == "Strict":
            unknown = _schema_problems(self.validator, body)
            if unknown:
                raise _Answer(400, "strict decoding error: " + "; ".join(unknown))
        if problems:
            raise _Answer(422, f"{KIND}.{GROUP} {name!r} is invalid: " + "; ".join(problems),
                          {"name": name, "group": GROUP, "kind": KIND})
        return body

    def _create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        for other_writer in self._before_create:
            other_writer()
        self._before_create.clear()
        if body["metadata"].get("resourceVersion"):
            raise _Answer(422, "metadata.resourceVersion: Invalid value: must be empty on create")
        if (namespace, name) in self.objects:
            raise _Answer(409, f'{PLURAL}.{GROUP} "{name}" already exists',
                          {"name": name, "group": GROUP, "kind": PLURAL})
        return self._store(namespace, body, created=True)

    def _update(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"]["name"] != name:
            raise _Answer(400, f"the name of the object ({body['metadata']['name']}) does not match the name "
                               f"on the URL ({name})")
        current = self._existing(namespace, name)
        for change in self._before_update:
            change(current)
            self._bump(current)
        self._before_update.clear()
        carried = body["metadata"].get("resourceVersion")
        if not carried:
            raise _Answer(422, "metadata.resourceVersion: Required value: the stand-in requires it on update")
        if carried != current["metadata"]["resourceVersion"]:
            raise _Answer(409, f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "{name}": the object has been '
                               "modified; please apply your changes to the latest version and try again",
                          {"name": name, "group": GROUP, "kind": PLURAL})
        return self._store(namespace, body, created=False, previous=current)

    def _bump(self, obj: dict[str, Any]) -> None:
        self._next_rv += 1
        obj["metadata"]["resourceVersion"] = str(self._next_rv)

    def _store(self, namespace: str, body: dict[str, Any], created: bool,
               previous: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        meta["namespace"] = namespace
        if created:
            meta.update(uid=f"uid-{self._next_rv}", generation=1,
                        creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        else:
            assert previous is not None
            old = previous["metadata"]
            meta.update(uid=old["uid"], creationTimestamp=old["creationTimestamp"],
                        generation=old["generation"] + (body.get("spec") != previous.get("spec")))
        self._bump(body)
        self.objects[(namespace, meta["name"])] = body
        return body
