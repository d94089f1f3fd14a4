"""The NodeFeature's owner reference: `kvminfo publish` reads its own pod and
names the pod's controller (the DaemonSet), so an uninstall (deleting the
DaemonSet) lets the garbage collector delete the object.

Against tests/apiserver_standin.py, which validates ownerReferences with the
API server's rules (apimachinery ValidateOwnerReferences) and does what the
garbage collector does when an owner is deleted (Kubernetes "Owners and
Dependents"). The expected references come from the pod object the stand-in
holds, as the DaemonSet controller makes it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import KVMINFO

from kvminfo.output.nodefeature import owner_reference
from kvminfo.output.nodefeature_client import NodeFeatureStore, PublishError, load_api_client

NODE, NS, DAEMONSET, POD = "node-3", "kvminfo", "kvminfo-publish", "kvminfo-publish-7xk2p"
OBJECT = f"kvminfo-{NODE}"


def publish(kubeconfig: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("NODE_NAME", "POD_NAMESPACE", "POD_NAME", "KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    return subprocess.run([str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE,
                           "--namespace", NS, "--no-libvirt", *extra],
                          capture_output=True, text=True, timeout=60, env={**clean, **env})


def daemonset_ref(pod: dict) -> dict:
    (ref,) = pod["metadata"]["ownerReferences"]
    return {"apiVersion": ref["apiVersion"], "kind": ref["kind"], "name": ref["name"], "uid": ref["uid"]}


def test_owner_is_the_pods_daemonset_and_goes_with_an_uninstall(standin, kubeconfig):
    pod = standin.add_daemonset_pod(NS, DAEMONSET, POD)
    done = publish(kubeconfig, POD_NAME=POD)  # $POD_NAME, as the DaemonSet's downward API sets it
    assert done.returncode == 0, done.stderr
    stored = standin.get_object(NS, OBJECT)
    assert stored["metadata"]["ownerReferences"] == [daemonset_ref(pod)]
    assert ("GET", 200) in standin.verbs() and any(s.path == f"/api/v1/namespaces/{NS}/pods/{POD}"
                                                   for s in standin.seen)
    assert f"owner of {NS}/{OBJECT}: DaemonSet {DAEMONSET}" in done.stderr
    # kubectl delete -k deploy/nodefeature: the DaemonSet goes, the collector takes the object
    assert standin.delete_owner("apps/v1", "DaemonSet", NS, DAEMONSET) == [OBJECT]
    assert standin.get_object(NS, OBJECT) is None


def test_an_object_from_before_owner_references_gets_one_on_upgrade(standin, kubeconfig):
    pod = standin.add_daemonset_pod(NS, DAEMONSET, POD)
    assert publish(kubeconfig).returncode == 0  # an older publisher: no --pod-name
    assert "ownerReferences" not in standin.get_object(NS, OBJECT)["metadata"]
    done = publish(kubeconfig, "--pod-name", POD)
    assert done.returncode == 0, done.stderr
    assert f"replaced {NS}/{OBJECT}" in done.stderr and "no owner reference to DaemonSet" in done.stderr
    assert standin.get_object(NS, OBJECT)["metadata"]["ownerReferences"] == [daemonset_ref(pod)]
    again = publish(kubeconfig, "--pod-name", POD)
    assert "unchanged" in again.stderr


def test_a_recreated_daemonset_replaces_the_stale_reference_and_others_stay(standin, kubeconfig):
    someone_elses = {"apiVersion": "v1", "kind": "ConfigMap", "name": "inventory", "uid": "cm-uid-1"}
    stale = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": DAEMONSET, "uid": "uid-of-the-deleted-one"}
    assert publish(kubeconfig).returncode == 0
    stored = standin.get_object(NS, OBJECT)
    stored["metadata"]["ownerReferences"] = [someone_elses, stale]
    standin.put_object(NS, stored)
    pod = standin.add_daemonset_pod(NS, DAEMONSET, POD)
    done = publish(kubeconfig, "--pod-name", POD)
    assert done.returncode == 0, done.stderr
    assert standin.get_object(NS, OBJECT)["metadata"]["ownerReferences"] == [someone_elses, daemonset_ref(pod)]


@pytest.mark.parametrize("status, said", [(403, "RBAC must allow get on pods"), (404, "no such pod")])
def test_pod_not_readable_publishes_without_an_owner_and_says_why(standin, kubeconfig, status, said):
    if status == 403:
        standin.add_daemonset_pod(NS, DAEMONSET, POD)
        standin.fail_next(403, verbs="GET", message='pods "x" is forbidden')
    done = publish(kubeconfig, "--pod-name", POD)
    assert done.returncode == 0, done.stderr
    assert "ownerReferences" not in standin.get_object(NS, OBJECT)["metadata"]
    (warning,) = [line for line in done.stderr.splitlines() if "owner reference" in line]
    assert said in warning and "publishing without an owner reference for now" in warning


def test_a_pod_without_a_controller_gives_no_owner(standin, kubeconfig):
    pod = standin.add_daemonset_pod(NS, DAEMONSET, POD)
    pod["metadata"]["ownerReferences"] = []  # e.g. a bare pod someone ran by hand
    done = publish(kubeconfig, "--pod-name", POD)
    assert done.returncode == 0, done.stderr
    assert "ownerReferences" not in standin.get_object(NS, OBJECT)["metadata"]
    assert "has no controller" in done.stderr


def test_owner_reference_takes_only_the_controller_and_only_its_identity():
    controller = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "u-1",
                  "controller": True, "blockOwnerDeletion": True}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "u-2"}
    assert owner_reference({"metadata": {"ownerReferences": [other, controller]}}) == {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "u-1"}
    assert owner_reference({"metadata": {"ownerReferences": [other]}}) is None
    assert owner_reference({"metadata": {}}) is None
    assert owner_reference({"metadata": {"ownerReferences": [{**controller, "uid": ""}]}}) is None


@pytest.mark.parametrize("refs, message", [
    ([{"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "u"}], "v1, Kind=Event is disallowed"),
    ([{"apiVersion": "apps/", "kind": "DaemonSet", "name": "d", "uid": "u"}], "version must not be empty"),
    ([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": ""}], "uid must not be empty"),
    ([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "a", "uid": "1", "controller": True},
      {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "b", "uid": "2", "controller": True}],
     "Only one reference can have Controller set to true"),
])
def test_standin_refuses_owner_references_the_api_server_refuses(standin, kubeconfig, refs, message):
    store = NodeFeatureStore(load_api_client(str(kubeconfig)), NS)
    body = {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature",
            "metadata": {"name": OBJECT, "namespace": NS, "ownerReferences": refs}, "spec": {"labels": {}}}
    with pytest.raises(PublishError, match="rejected with 422") as raised:
        store.create(body)
    assert message in str(raised.value)
    body["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u"}]
    assert store.create(body)["metadata"]["ownerReferences"] == body["metadata"]["ownerReferences"]
