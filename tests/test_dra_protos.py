"""The DRA driver's gRPC modules: byte-exact kubelet protos, and stubs generated from them.

Expected values come from ../shared/corpus/dra/: PROVENANCE.md's sha256 of each
proto (Kubernetes v1.36.2) and FACTS.md section 2's full gRPC method names.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "plugin" / "kvminfo_dra" / "api"
CORPUS = ROOT.parent / "shared" / "corpus" / "dra"

# PROVENANCE.md of ../shared/corpus/dra (upstream vendor/k8s.io/kubelet/pkg/apis/<api>/api.proto)
SHA256 = {
    "dra_v1": "b3066ad7f6abcfd0003c47b06ceb801d76997d78d6be505597478d3905b9cc57",
    "dra_v1beta1": "7900b11793ad897d0375d67b3bbae675869b574e21dfb1bf5334cc1556138c42",
    "dra_health_v1alpha1": "75f8c523ec546ceb83bd63f3b7a38c23d979494e7015db12d146e2f39dd4528e",
    "pluginregistration_v1": "7a67a0000a1a167c155286834bc9ccb489f8bcdb394e006daba270189c272afa",
}
# FACTS.md section 2: the names the kubelet calls.
METHODS = {
    "dra_v1": ("DRAPlugin", ["/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources",
                             "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodeUnprepareResources"]),
    "dra_v1beta1": ("DRAPlugin", ["/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodePrepareResources",
                                  "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodeUnprepareResources"]),
    "dra_health_v1alpha1": ("DRAResourceHealth", ["/v1alpha1.DRAResourceHealth/NodeWatchResources"]),
    "pluginregistration_v1": ("Registration", ["/pluginregistration.Registration/GetInfo",
                                               "/pluginregistration.Registration/NotifyRegistrationStatus"]),
}


@pytest.mark.parametrize("api", sorted(SHA256))
def test_proto_is_the_upstream_file(api: str) -> None:
    assert hashlib.sha256((API / api / "api.proto").read_bytes()).hexdigest() == SHA256[api]


@pytest.mark.parametrize("api", sorted(SHA256))
def test_proto_equals_the_corpus_copy(api: str) -> None:
    corpus = CORPUS / "proto" / api.replace("_", "-") / "api.proto"
    if not corpus.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{corpus} is missing on CI")
        pytest.skip(f"{corpus}: no ../shared corpus beside this clone")
    assert (API / api / "api.proto").read_bytes() == corpus.read_bytes()


@pytest.mark.parametrize("api", sorted(METHODS))
def test_method_paths_are_the_kubelets(api: str) -> None:
    pb2 = importlib.import_module(f"kvminfo_dra.api.{api}.api_pb2")
    service_name, paths = METHODS[api]
    service = pb2.DESCRIPTOR.services_by_name[service_name]
    assert sorted(f"/{service.full_name}/{m.name}" for m in service.methods) == sorted(paths)


def test_share_id_only_in_v1() -> None:
    """dra/v1 Device has the optional share_id (field 5, consumable capacity); v1beta1 has not."""
    from kvminfo_dra.api.dra_v1 import api_pb2 as v1
    from kvminfo_dra.api.dra_v1beta1 import api_pb2 as v1beta1

    field = v1.Device.DESCRIPTOR.fields_by_name["share_id"]
    assert field.number == 5 and field.has_presence
    assert "share_id" not in v1beta1.Device.DESCRIPTOR.fields_by_name


def test_generated_modules_are_current(tmp_path: Path) -> None:
    """`make proto-dra` would write the same modules (the stubs were not edited by hand)."""
    for api in SHA256:
        (tmp_path / api).mkdir()
        (tmp_path / api / "api.proto").write_bytes((API / api / "api.proto").read_bytes())
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
                        "--grpc_python_out=.", f"{api}/api.proto"], cwd=tmp_path, check=True, capture_output=True)
        for name in ("api_pb2.py", "api_pb2.pyi"):
            assert (tmp_path / api / name).read_text() == (API / api / name).read_text(), f"{api}/{name}"
        grpc_module = (tmp_path / api / "api_pb2_grpc.py").read_text().replace(
            f"from {api} import api_pb2 as", "from . import api_pb2 as")
        assert grpc_module == (API / api / "api_pb2_grpc.py").read_text(), f"{api}/api_pb2_grpc.py"
