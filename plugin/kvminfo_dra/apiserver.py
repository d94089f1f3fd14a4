"""The API-server edge of the DRA driver: discovery of resource.k8s.io, this node's
ResourceSlices (list, create, update, delete), and reading ResourceClaims.

Uses the official `kubernetes` client's CustomObjectsApi, which serves any
group/version/plural as plain JSON: one code path for resource.k8s.io v1,
v1beta2 and v1beta1 (the typed classes differ per version). Every failure is one
ApiError line naming the verb, the object and what to do.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as TransportError

from kvminfo_dra.devices import RESOURCE_VERSIONS
from kvminfo_dra.upstream import KvminfoError, one_line

log = logging.getLogger(__name__)

GROUP = "resource.k8s.io"
REQUEST_TIMEOUT_S = (5.0, 20.0)  # (connect, read): a wedged API server costs one bounded wait
FIELD_MANAGER = "kvminfo-dra-driver"


class ApiError(KvminfoError):
    """One failed request, in one line. ``status`` 0: the server was not reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _message(err: ApiException) -> str:
    try:
        body = json.loads(err.body or "")
    except (TypeError, ValueError):
        body = {}
    said = body.get("message") if isinstance(body, dict) else None
    return one_line(said or err.reason or "no message")


def _object(what: str, answer: object) -> dict[str, Any]:
    """The client gives custom objects as plain JSON; anything but an object is a broken answer."""
    if not isinstance(answer, dict):
        raise ApiError(f"{what}: the API server answered with {type(answer).__name__}, not an object")
    return answer


class ResourceApi:
    """resource.k8s.io in the version the API server serves (``discover`` picks it)."""

    def __init__(self, api_client: k8s.ApiClient, version: str | None = None) -> None:
        self.api_client = api_client
        self.host = api_client.configuration.host
        self._objects = k8s.CustomObjectsApi(api_client)
        self.version = version

    def _fail(self, what: str, err: Exception) -> ApiError:
        if isinstance(err, ApiException) and err.status:
            hint = {401: ": the credentials were not accepted",
                    403: ": RBAC must allow it (deploy/dra's ClusterRole)"}.get(err.status, "")
            return ApiError(f"{what}: {err.status} {err.reason}{hint}: {_message(err)}", err.status)
        reason = err.reason if isinstance(err, ApiException) else err
        return ApiError(f"{what}: cannot reach the API server at {self.host}: {one_line(reason)}")

    def discover(self) -> str:
        """The newest resource.k8s.io version both we and the server know (FACTS.md: v1 since 1.34,
        v1beta2 in 1.33, v1beta1 in 1.32)."""
        try:
            groups = k8s.ApisApi(self.api_client).get_api_versions(_request_timeout=REQUEST_TIMEOUT_S)
        except (ApiException, TransportError) as err:
            raise self._fail("discovery of /apis", err) from None
        served = {v.version for g in groups.groups or [] if g.name == GROUP for v in g.versions or []}
        chosen = next((v for v in RESOURCE_VERSIONS if v in served), None)
        if chosen is None:
            raise ApiError(f"the API server at {self.host} serves no {GROUP} version this driver knows "
                           f"({', '.join(RESOURCE_VERSIONS)}; it serves {', '.join(sorted(served)) or 'none'}): "
                           "DRA needs Kubernetes >= 1.32 with the resource.k8s.io API enabled")
        self.version = chosen
        return chosen

    def _version(self) -> str:
        return self.version or self.discover()

    def list_slices(self, node: str, driver: str) -> list[dict[str, Any]]:
        selector = f"spec.nodeName={node},spec.driver={driver}"
        try:
            answer = self._objects.list_cluster_custom_object(GROUP, self._version(), "resourceslices",
                                                              field_selector=selector, _request_timeout=REQUEST_TIMEOUT_S)
        except (ApiException, TransportError) as err:
            raise self._fail(f"list resourceslices ({selector})", err) from None
        return list(_object(f"list resourceslices ({selector})", answer).get("items") or [])

    def create_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._write("create", body)

    def replace_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._write("update", body)

    def _write(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        options: dict[str, Any] = {"_headers": {"Content-Type": "application/json"}, "field_manager": FIELD_MANAGER,
                                   "field_validation": "Strict", "_request_timeout": REQUEST_TIMEOUT_S}
        try:
            if verb == "create":
                answer = self._objects.create_cluster_custom_object(GROUP, self._version(), "resourceslices", body,
                                                                    **options)
            else:
                answer = self._objects.replace_cluster_custom_object(GROUP, self._version(), "resourceslices", name,
                                                                     body, **options)
        except (ApiException, TransportError) as err:
            raise self._fail(f"{verb} resourceslice {name!r}", err) from None
        return _object(f"{verb} resourceslice {name!r}", answer)

    def delete_slice(self, name: str) -> bool:
        """False when it was already gone."""
        try:
            self._objects.delete_cluster_custom_object(GROUP, self._version(), "resourceslices", name,
                                                       _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as err:
            if err.status == 404:
                return False
            raise self._fail(f"delete resourceslice {name!r}", err) from None
        except TransportError as err:
            raise self._fail(f"delete resourceslice {name!r}", err) from None
        return True

    def read_claim(self, namespace: str, name: str) -> dict[str, Any]:
        what = f"get resourceclaim {namespace}/{name}"
        try:
            answer = self._objects.get_namespaced_custom_object(GROUP, self._version(), namespace, "resourceclaims",
                                                                name, _request_timeout=REQUEST_TIMEOUT_S)
        except (ApiException, TransportError) as err:
            raise self._fail(what, err) from None
        return _object(what, answer)
