"""`kvminfo publish` with the real `kubernetes` client against a local stand-in
of the API server (tests/apiserver_standin.py) that checks paths, verbs,
content types, the NodeFeature CRD schema and resourceVersion like the real
one. Probes use the real /dev/kvm and libvirt; the Hyper-V positive case
injects a capable kernel at the ioctl layer (tests/kvm_fakes.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver_standin import ApiServerStandin, load_validator, self_signed_certificate
from conftest import KVMINFO, PrivateLibvirtd
from kvm_fakes import HyperVKernel
from signal_ready import wait_until_catching

from kvminfo import cli
from kvminfo.commands import publish as publish_command
from kvminfo.common.backoff import backoff_delay_s, backoff_total_s
from kvminfo.common.errors import KvminfoError
from kvminfo.model import FeatureVerdict, Report, SourceResult, Status, Support
from kvminfo.output import nodefeature_client as publish_client
from kvminfo.output.nodefeature import (
    HYPERV_FLAGS,
    KVM_ATTRIBUTES,
    LIBVIRT_ATTRIBUTES,
    NODE_NAME_LABEL,
    KubernetesNameError,
    build_nodefeature,
    change_reason,
    object_name,
    updated_object,
)
from kvminfo.output.nodefeature_client import NodeFeatureStore, PublishError, load_api_client, publish_with_retries
from kvminfo.sources import ioctl as kvm_ioctl
from kvminfo.sources.facts import KvmFacts
from kvminfo.sources.kvm import SOURCE as KVM_SOURCE
from kvminfo.sources.libvirt import SOURCE as LIBVIRT_SOURCE
from kvminfo.sources.libvirt_facts import DomainCapabilities, HostModel, LibvirtFacts

NODE, NS = "node-1.example", "kvminfo"
OBJECT = f"kvminfo-{NODE}"


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """In-process runs install SIGTERM/SIGINT handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def publish(kubeconfig: Path, *extra: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    args = [str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE, "--namespace", NS,
            "--no-libvirt", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else clean_env())


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NODE_NAME", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    return {**env, **extra}


def labels_command(*extra: str) -> dict[str, str]:
    done = subprocess.run([str(KVMINFO), "labels", *extra], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


def writes(standin: ApiServerStandin) -> list[tuple[str, int]]:
    return [(m, s) for m, s in standin.verbs() if m != "GET"]


def report(labels: dict[str, str], supported: tuple[str, ...] = (), libvirt_ok: bool = False) -> Report:
    kvm = SourceResult("kvm", Status.OK, facts=KvmFacts(api_version=12, caps={"KVM_CAP_MAX_VCPUS": 1024},
                                                        nested=None, cpu_vendor="AMD"))
    domcaps = DomainCapabilities(max_vcpus=255, host_model=HostModel(model="EPYC", vendor="AMD"),
                                 sev=False, sgx=False, tdx=False, hyperv_supported=True, domain_type="kvm")
    libvirt = (SourceResult("libvirt", Status.OK, facts=LibvirtFacts(uri="qemu:///system", libvirt_version="9.0.0",
                                                                     domcaps=domcaps))
               if libvirt_ok else SourceResult("libvirt", Status.UNAVAILABLE, "socket missing"))
    # What collect() records for the sources that answered (Source.attributes).
    attributes = {"kvm": KVM_SOURCE.attributes(kvm)}
    if libvirt_ok:
        attributes["libvirt"] = LIBVIRT_SOURCE.attributes(libvirt)
    features = tuple(FeatureVerdict(n, Support.SUPPORTED) for n in supported) + (
        FeatureVerdict("evmcs", Support.UNSUPPORTED), FeatureVerdict("avic", Support.UNKNOWN))
    return Report((kvm, libvirt), features, labels, attributes=attributes)


# -- the pure object ------------------------------------------------------------------------------

def test_nodefeature_body_shape_and_schema():
    body = build_nodefeature(report({"feature.node.kubernetes.io/kvm-info-usable": "true"}, ("synic", "vpindex"), libvirt_ok=True),
                             NODE, NS)
    assert body["apiVersion"] == "nfd.k8s-sigs.io/v1alpha1" and body["kind"] == "NodeFeature"
    assert body["metadata"] == {"name": OBJECT, "namespace": NS, "labels": {NODE_NAME_LABEL: NODE}}
    assert body["spec"]["labels"] == {"feature.node.kubernetes.io/kvm-info-usable": "true"}
    features = body["spec"]["features"]
    # only SUPPORTED verdicts become flags; unsupported and unknown are absent
    assert features["flags"] == {HYPERV_FLAGS: {"elements": {"synic": {}, "vpindex": {}}}}
    assert features["attributes"][KVM_ATTRIBUTES]["elements"] == {
        "usable": "true", "api_version": "12", "max_vcpus": "1024", "cpu_vendor": "AMD"}  # nested unknown: absent
    assert features["attributes"][LIBVIRT_ATTRIBUTES]["elements"]["max_vcpus"] == "255"
    assert features["attributes"][LIBVIRT_ATTRIBUTES]["elements"]["sev"] == "false"
    assert list(load_validator().iter_errors(body)) == []


def test_sources_that_did_not_answer_contribute_no_features():
    body = build_nodefeature(report({}), NODE, NS)
    assert body["spec"]["features"] == {"attributes": {KVM_ATTRIBUTES: body["spec"]["features"]["attributes"]
                                                      [KVM_ATTRIBUTES]}}
    assert LIBVIRT_ATTRIBUTES not in body["spec"]["features"]["attributes"]


@pytest.mark.parametrize("node", ["", "Node-1", "node_1", "-node", "a" * 254])
def test_invalid_node_names_are_refused(node):
    with pytest.raises(KubernetesNameError, match="not a valid Kubernetes node name"):
        object_name(node)


def test_object_name_too_long_after_prefix():
    with pytest.raises(KubernetesNameError, match="too long"):
        object_name("a" * 250)


def test_change_reason_compares_only_what_we_own():
    desired = build_nodefeature(report({"feature.node.kubernetes.io/kvm-info-usable": "true"}, ("synic",)), NODE, NS)
    assert change_reason(None, desired) == "no NodeFeature object yet"
    stored = updated_object({"metadata": {"resourceVersion": "7", "labels": {"team": "virt"},
                                          "annotations": {"a": "b"}}}, desired)
    stored["metadata"].update(uid="x", managedFields=[{}])
    assert change_reason(stored, desired) is None  # server-added metadata and others' labels do not count
    assert stored["metadata"]["resourceVersion"] == "7" and stored["metadata"]["labels"]["team"] == "virt"
    assert stored["metadata"]["annotations"] == {"a": "b"}
    more = build_nodefeature(report({"feature.node.kubernetes.io/kvm-info-usable": "true",
                                     "feature.node.kubernetes.io/kvm-info-nested": "true"}, ("synic",)), NODE, NS)
    assert change_reason(stored, more) == "labels changed (+feature.node.kubernetes.io/kvm-info-nested)"
    fewer_flags = build_nodefeature(report({"feature.node.kubernetes.io/kvm-info-usable": "true"}), NODE, NS)
    assert change_reason(stored, fewer_flags) == "features changed"
    relabelled = {**stored, "metadata": {**stored["metadata"], "labels": {NODE_NAME_LABEL: "other"}}}
    assert "object label nfd.node.kubernetes.io/node-name" in change_reason(relabelled, desired)


# -- the stand-in really checks (so the tests below can fail) --------------------------------------

def test_standin_rejects_what_the_api_server_rejects(standin, kubeconfig):
    store = NodeFeatureStore(load_api_client(str(kubeconfig)), NS)
    good = build_nodefeature(report({"feature.node.kubernetes.io/kvm-info-usable": "true"}), NODE, NS)
    bad_value = {**good, "spec": {"features": {"attributes": {"kvminfo.kvm": {"elements": {"max_vcpus": 1}}}}}}
    with pytest.raises(PublishError, match="422.*max_vcpus.*not of type 'string'"):
        store.create(bad_value)
    unknown_field = {**good, "spec": {**good["spec"], "labelz": {}}}
    with pytest.raises(PublishError, match="400.*strict decoding error.*labelz"):
        store.create(unknown_field)  # we ask for fieldValidation=Strict
    store.create(good)
    stored = store.get(OBJECT)
    no_version = {**stored, "metadata": {k: v for k, v in stored["metadata"].items() if k != "resourceVersion"}}
    with pytest.raises(PublishError, match="422.*resourceVersion"):
        store.replace(no_version)
    stale = {**stored, "metadata": {**stored["metadata"], "resourceVersion": "1"}}
    with pytest.raises(publish_client._Conflict):
        store.replace(stale)
    with pytest.raises(publish_client._Conflict):
        store.create(good)  # AlreadyExists
    wrong_token = load_api_client(str(standin.write_kubeconfig(kubeconfig.parent / "bad", token="nope")))
    with pytest.raises(PublishError, match="401 Unauthorized"):
        NodeFeatureStore(wrong_token, NS).get(OBJECT)


# -- kvminfo publish end to end --------------------------------------------------------------------

def test_create_then_unchanged_writes_nothing(standin, kubeconfig):
    done = publish(kubeconfig)
    assert done.returncode == 0, done.stderr
    assert f"created {NS}/{OBJECT}" in done.stderr and "no NodeFeature object yet" in done.stderr
    assert standin.verbs() == [("GET", 404), ("POST", 201)]
    post = standin.seen[1]
    assert post.path == f"/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/{NS}/nodefeatures"
    assert post.query == {"fieldManager": "kvminfo", "fieldValidation": "Strict"}
    assert post.content_type == "application/json"
    assert standin.seen[0].path == f"/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/{NS}/nodefeatures/{OBJECT}"
    stored = standin.get_object(NS, OBJECT)
    assert stored["spec"]["labels"] == labels_command("--no-libvirt")  # the same labels `kvminfo labels` prints
    assert stored["metadata"]["labels"] == {NODE_NAME_LABEL: NODE}
    assert stored["spec"]["features"]["attributes"][KVM_ATTRIBUTES]["elements"]["api_version"] == "12"
    version = stored["metadata"]["resourceVersion"]

    again = publish(kubeconfig)
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stderr and "nothing written" in again.stderr
    assert writes(standin) == [("POST", 201)]  # the second run only read
    assert standin.get_object(NS, OBJECT)["metadata"]["resourceVersion"] == version


def test_real_libvirt_facts_are_published(standin, kubeconfig, libvirt_uri):
    done = subprocess.run([str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE,
                           "--namespace", NS, "--libvirt-uri", libvirt_uri],
                          capture_output=True, text=True, timeout=60, env=clean_env())
    assert done.returncode == 0, done.stderr
    stored = standin.get_object(NS, OBJECT)
    assert stored["spec"]["labels"] == labels_command("--libvirt-uri", libvirt_uri)
    libvirt = stored["spec"]["features"]["attributes"][LIBVIRT_ATTRIBUTES]["elements"]
    assert int(libvirt["max_vcpus"]) > 0 and libvirt["version"].count(".") == 2


def test_changed_content_is_replaced_with_the_current_resource_version(standin, kubeconfig):
    old = build_nodefeature(report({"feature.node.kubernetes.io/kvm-info-cap-hyperv-synic": "true"}, ("synic",)), NODE, NS)
    old["metadata"]["labels"]["team"] = "virt"
    old["metadata"]["annotations"] = {"owner": "someone"}
    version = standin.put_object(NS, old)["metadata"]["resourceVersion"]
    done = publish(kubeconfig)
    assert done.returncode == 0, done.stderr
    assert f"replaced {NS}/{OBJECT}" in done.stderr and "-feature.node.kubernetes.io/kvm-info-cap-hyperv-synic" in done.stderr
    put = [s for s in standin.seen if s.method == "PUT"]
    assert [(p.status, p.resource_version) for p in put] == [(200, version)]
    stored = standin.get_object(NS, OBJECT)
    assert "feature.node.kubernetes.io/kvm-info-cap-hyperv-synic" not in stored["spec"]["labels"]
    assert HYPERV_FLAGS not in stored["spec"]["features"].get("flags", {})
    assert stored["metadata"]["labels"]["team"] == "virt" and stored["metadata"]["annotations"] == {"owner": "someone"}
    assert stored["metadata"]["generation"] == 2


def test_conflict_is_reread_and_retried(standin, kubeconfig):
    standin.put_object(NS, build_nodefeature(report({"stale": "true"}), NODE, NS))
    standin.concurrent_update_before_next_put()
    done = publish(kubeconfig)
    assert done.returncode == 0, done.stderr
    assert "409 conflict" in done.stderr and "re-reading" in done.stderr
    assert standin.verbs() == [("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 200)]
    stored = standin.get_object(NS, OBJECT)
    assert stored["metadata"]["annotations"] == {"other-writer": "was-here"}  # the other writer's change survives
    assert "stale" not in stored["spec"]["labels"]


def test_create_race_is_reread(standin, kubeconfig):
    """Someone creates the object between our GET (404) and our POST: AlreadyExists -> re-read."""
    standin.concurrent_create_before_next_post(NS, build_nodefeature(report({"stale": "true"}), NODE, NS))
    done = publish(kubeconfig)
    assert done.returncode == 0, done.stderr
    assert standin.verbs() == [("GET", 404), ("POST", 409), ("GET", 200), ("PUT", 200)]
    assert "stale" not in standin.get_object(NS, OBJECT)["spec"]["labels"]


def test_hyperv_host_publishes_flags(standin, kubeconfig, monkeypatch, capsys, restore_signals):
    monkeypatch.setattr(kvm_ioctl, "ioctl", HyperVKernel())
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE, "--namespace", NS,
                     "--no-libvirt"]) == 0
    stored = standin.get_object(NS, OBJECT)
    flags = stored["spec"]["features"]["flags"][HYPERV_FLAGS]["elements"]
    assert {"synic", "synictimer", "vpindex", "evmcs", "ipi"} <= set(flags)
    assert all(value == {} for value in flags.values())
    assert stored["spec"]["labels"]["feature.node.kubernetes.io/kvm-info-cap-hyperv-synictimer"] == "true"
    assert {f"feature.node.kubernetes.io/kvm-info-cap-hyperv-{name}" for name in flags} <= set(stored["spec"]["labels"])


# -- in-cluster configuration (the DaemonSet's path), over TLS -------------------------------------

@pytest.fixture
def service_account(tmp_path, monkeypatch) -> Iterator[tuple[ApiServerStandin, Path]]:
    """A TLS stand-in plus the service-account files and env a pod gets; yields (stand-in, CA file)."""
    from kubernetes.config import incluster_config

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make the stand-in's TLS certificate")
    cert, key = self_signed_certificate(tmp_path)
    server = ApiServerStandin(tls=(cert, key)).start()
    token = tmp_path / "token"
    token.write_text(server.token)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    host, port = server.address
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
    monkeypatch.setenv("NODE_NAME", NODE)
    monkeypatch.setenv("POD_NAMESPACE", NS)
    try:
        yield server, cert
    finally:
        server.stop()


def test_in_cluster_service_account_over_tls(service_account, restore_signals):
    server, _ = service_account
    assert cli.main(["publish", "--no-libvirt"]) == 0
    assert server.verbs() == [("GET", 404), ("POST", 201)]
    assert server.get_object(NS, OBJECT)["metadata"]["labels"] == {NODE_NAME_LABEL: NODE}


def test_in_cluster_without_a_token_says_so(service_account, monkeypatch, restore_signals):
    from kubernetes.config import incluster_config

    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", "/nonexistent/token")
    with pytest.raises(KvminfoError, match="in-cluster config .*Service token file does not exist"):
        publish_command.main(["--no-libvirt"])  # the command itself: cli.main would print the error


def test_in_cluster_untrusted_certificate_is_refused(service_account, tmp_path, monkeypatch, capsys,
                                                     restore_signals):
    from kubernetes.config import incluster_config

    server, _ = service_account
    (tmp_path / "other").mkdir()
    other_ca, _ = self_signed_certificate(tmp_path / "other")  # not the CA that signed the server's certificate
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(other_ca))
    assert cli.main(["publish", "--no-libvirt", "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the API server at https://127.0.0.1:" in err and "CERTIFICATE_VERIFY_FAILED" in err
    assert server.seen == []  # nothing got through


# -- API errors: one clear line, bounded retries with backoff --------------------------------------

ERRORS = [
    (401, "401 Unauthorized", "credentials"),
    (403, "403 Forbidden", "deploy/nodefeature's Role grants get, create, update and delete on nodefeatures in 'kvminfo'"),
    (500, "API server error 500", "injected 500"),
    (503, "API server error 503", "injected 503"),
]


@pytest.mark.parametrize("status, first, second", ERRORS)
def test_api_errors_are_retried_with_backoff_then_reported(standin, kubeconfig, status, first, second):
    if status == 401:
        kubeconfig = standin.write_kubeconfig(kubeconfig, token="expired")
    else:
        standin.fail_next(status, times=100)
    waits: list[float] = []
    store = NodeFeatureStore(load_api_client(str(kubeconfig)), NS)
    desired = build_nodefeature(report({"feature.node.kubernetes.io/kvm-info-usable": "true"}), NODE, NS)
    with pytest.raises(PublishError) as raised:
        publish_with_retries(store, desired, retries=4, wait=lambda s: waits.append(s) or False)
    assert waits == [1.0, 2.0, 4.0, 8.0]  # exponential, never a tight loop
    assert len(standin.seen) == 5  # first try + 4 retries
    message = str(raised.value)
    assert first in message and second in message and "\n" not in message


def test_backoff_is_capped():
    assert [backoff_delay_s(retry) for retry in range(1, 11)] == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert backoff_delay_s(10**6) == 60.0  # no overflow for a huge retry number
    assert backoff_total_s(4) == 1 + 2 + 4 + 8


def test_api_recovers_within_the_retries(standin, kubeconfig):
    standin.fail_next(503, times=2)
    waits: list[float] = []
    store = NodeFeatureStore(load_api_client(str(kubeconfig)), NS)
    outcome = publish_with_retries(store, build_nodefeature(report({}), NODE, NS), retries=5,
                                   wait=lambda s: waits.append(s) or False)
    assert outcome is not None and outcome.action == "created" and waits == [1.0, 2.0]


def test_invalid_object_is_not_retried(standin, kubeconfig):
    standin.fail_next(422, verbs="POST")
    waits: list[float] = []
    store = NodeFeatureStore(load_api_client(str(kubeconfig)), NS)
    with pytest.raises(PublishError, match="rejected with 422"):
        publish_with_retries(store, build_nodefeature(report({}), NODE, NS), retries=5,
                             wait=lambda s: waits.append(s) or False)
    assert waits == []


def test_an_answer_that_is_not_an_object_is_an_error(standin, kubeconfig):
    standin.answer_next(200, ["not", "an", "object"], verbs="GET")
    store = NodeFeatureStore(load_api_client(str(kubeconfig)), NS)
    with pytest.raises(PublishError, match="answered with list, not an object"):
        store.get(OBJECT)


def test_crd_missing_cli_message_and_bounded_retries(standin, kubeconfig):
    standin.crd_installed = False
    started = time.monotonic()
    done = publish(kubeconfig, "--retries", "2")
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, done.stderr  # two "retry n of 2" warnings, then the final error
    assert "retry 1 of 2 in 1s" in lines[0] and "retry 2 of 2 in 2s" in lines[1]
    assert lines[2].startswith("kvminfo publish: ") and "NodeFeature CRD" in lines[2] and "not installed" in lines[2]
    assert standin.verbs() == [("GET", 404)] * 3
    assert elapsed >= 3.0  # 1 s + 2 s of backoff


def test_unreachable_api_server(tmp_path):
    standin = ApiServerStandin().start()
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
    standin.stop()  # nothing listens on that port any more
    done = publish(kubeconfig, "--retries", "0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cannot reach the API server at http://127.0.0.1:" in done.stderr


# -- operator input ---------------------------------------------------------------------------------

def test_missing_node_name(kubeconfig):
    done = subprocess.run([str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--namespace", NS],
                          capture_output=True, text=True, timeout=30, env=clean_env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("kvminfo publish: no node name: give --node-name or set NODE_NAME "
                                   "(in a DaemonSet: env from fieldRef spec.nodeName)")


def test_node_and_namespace_from_the_environment(standin, kubeconfig):
    done = subprocess.run([str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--no-libvirt"],
                          capture_output=True, text=True, timeout=60,
                          env=clean_env(NODE_NAME="node-2", POD_NAMESPACE="nfd-ext"))
    assert done.returncode == 0, done.stderr
    assert standin.get_object("nfd-ext", "kvminfo-node-2")["metadata"]["labels"] == {NODE_NAME_LABEL: "node-2"}


@pytest.mark.parametrize("extra, culprit", [
    (["--namespace", "Bad_NS"], "namespace 'Bad_NS'"),
    (["--interval", "soon"], "--interval"),
    (["--retries", "-1"], "--retries -1"),
])
def test_bad_options_one_line(kubeconfig, extra, culprit):
    done = subprocess.run([str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE,
                           "--namespace", NS, *extra], capture_output=True, text=True, timeout=30, env=clean_env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and culprit in done.stderr, done.stderr


def test_bad_kubeconfig(tmp_path):
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    done = subprocess.run([str(KVMINFO), "publish", "--kubeconfig", str(broken), "--node-name", NODE,
                           "--namespace", NS], capture_output=True, text=True, timeout=30, env=clean_env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and f"--kubeconfig {broken}" in done.stderr, done.stderr


def test_help_explains_every_option():
    done = subprocess.run([str(KVMINFO), "publish", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for option in ("--node-name", "--namespace", "--kubeconfig", "--interval", "--retries", "--no-libvirt",
                   "NODE_NAME", "POD_NAMESPACE", "409", "SIGTERM"):
        assert option in done.stdout


# -- --interval mode -------------------------------------------------------------------------------

def start_interval(kubeconfig: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE,
                             "--namespace", NS, "--no-libvirt", *extra],
                            stderr=subprocess.PIPE, text=True, env=clean_env())


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 30) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    process.kill()
    raise AssertionError(f"{text!r} not seen in: {lines}")


def stop_with_sigterm(process: subprocess.Popen) -> tuple[int, float, str]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=10)
    finally:
        process.kill()
    return code, time.monotonic() - started, process.stderr.read()


def test_sigterm_in_interval_mode_exits_0(standin, kubeconfig):
    process = start_interval(kubeconfig, "--interval", "1h")
    wait_for_line(process, f"created {NS}/{OBJECT}")
    code, took, rest = stop_with_sigterm(process)
    assert code == 0 and took < 5.0
    assert "stopping on SIGTERM" in rest and "Traceback" not in rest


def test_sigterm_during_backoff_exits_0_at_once(standin, kubeconfig):
    standin.crd_installed = False
    process = start_interval(kubeconfig, "--interval", "1h", "--retries", "10")
    wait_for_line(process, "retry 2 of 10 in 2s")
    code, took, rest = stop_with_sigterm(process)
    assert code == 0 and took < 2.0  # did not sit out the backoff
    assert "stopping on SIGTERM" in rest


def start_with_hung_libvirt(kubeconfig: Path, daemon: PrivateLibvirtd, *extra: str) -> subprocess.Popen:
    daemon.pause()
    return subprocess.Popen([str(KVMINFO), "publish", "--kubeconfig", str(kubeconfig), "--node-name", NODE,
                             "--namespace", NS, "--libvirt-uri", daemon.uri, "--libvirt-timeout", "30", *extra],
                            stderr=subprocess.PIPE, text=True, env=clean_env())


def test_sigterm_during_a_hung_probe_exits_at_once(standin, kubeconfig, private_libvirtd):
    """The same stop as features-file's (one periodic loop): it used to wait out the libvirt deadline."""
    process = start_with_hung_libvirt(kubeconfig, private_libvirtd, "--interval", "1h")
    wait_until_catching(process)
    time.sleep(0.5)  # into the hung probe, well inside the 30 s libvirt deadline
    code, took, rest = stop_with_sigterm(process)
    assert code == 0 and took < 5.0  # at once, not after the 30 s deadline (a loose bound: the machine may be busy)
    assert "stopping on SIGTERM" in rest and "Traceback" not in rest
    assert standin.verbs() == []  # nothing was published


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_shot_stopped_before_it_published_exits_1(standin, kubeconfig, private_libvirtd, signum):
    """A one-shot caller (a Job, cron) must not take "stopped" for "published": it used to exit 0."""
    process = start_with_hung_libvirt(kubeconfig, private_libvirtd)
    wait_until_catching(process)
    time.sleep(0.5)
    started = time.monotonic()
    process.send_signal(signum)
    try:
        code = process.wait(timeout=10)
    finally:
        process.kill()
    rest = process.stderr.read()
    assert code == 1 and time.monotonic() - started < 5.0  # not after the 30 s libvirt deadline
    assert f"stopped on {signal.Signals(signum).name} before {NS}/{OBJECT} was written" in rest
    assert "Traceback" not in rest and standin.verbs() == []


def test_interval_loop_survives_api_errors_and_catches_up(standin, kubeconfig):
    standin.fail_next(503, times=1)
    process = start_interval(kubeconfig, "--interval", "1s", "--retries", "0")
    lines = wait_for_line(process, f"created {NS}/{OBJECT}")
    assert any("API server error 503" in line and "retrying in 1s" in line for line in lines)
    standin.put_object(NS, build_nodefeature(report({"drifted": "true"}), NODE, NS))  # someone overwrote it
    wait_for_line(process, f"replaced {NS}/{OBJECT}")
    code, _, _ = stop_with_sigterm(process)
    assert code == 0
    assert "drifted" not in standin.get_object(NS, OBJECT)["spec"]["labels"]


def test_labels_need_no_kubernetes_client():
    """`kvminfo labels` (the NFD hook) runs where the kubernetes package is not installed."""
    code = ("import sys; sys.modules['kubernetes'] = None  # its import now raises ImportError\n"
            "from kvminfo.cli import main; sys.exit(main(['labels', '--no-libvirt']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "feature.node.kubernetes.io/kvm-info-usable=true" in done.stdout.splitlines()


def test_malformed_kubeconfig_is_one_line(tmp_path):
    broken = tmp_path / "kubeconfig"
    broken.write_text("garbage: [\n")
    done = subprocess.run([str(KVMINFO), "publish", "--kubeconfig", str(broken), "--node-name", NODE,
                           "--namespace", NS, "--no-libvirt"],
                          capture_output=True, text=True, timeout=60, env=clean_env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert f"--kubeconfig {broken}: cannot load a cluster configuration" in done.stderr
