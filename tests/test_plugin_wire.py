"""Our api.proto against the upstream kubelet API, field by field.

The table is written from the kubelet's k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto
(names, numbers, types, labels, json names, services, streaming flags), not
derived from our descriptor, so any drift fails here.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from kvminfo_plugin.kubelet.v1beta1 import api_pb2

STRING, BOOL, INT64, INT32, MESSAGE = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_INT64, F.TYPE_INT32, F.TYPE_MESSAGE
ONE, MANY = "optional", "repeated"

# message -> [(field, number, type, label, message type or None, json name)]
UPSTREAM_MESSAGES = {
    "DevicePluginOptions": [("pre_start_required", 1, BOOL, ONE, None, "preStartRequired"),
                            ("get_preferred_allocation_available", 2, BOOL, ONE, None, "getPreferredAllocationAvailable")],
    "RegisterRequest": [("version", 1, STRING, ONE, None, "version"), ("endpoint", 2, STRING, ONE, None, "endpoint"),
                        ("resource_name", 3, STRING, ONE, None, "resourceName"),
                        ("options", 4, MESSAGE, ONE, "v1beta1.DevicePluginOptions", "options")],
    "Empty": [],
    "ListAndWatchResponse": [("devices", 1, MESSAGE, MANY, "v1beta1.Device", "devices")],
    "TopologyInfo": [("nodes", 1, MESSAGE, MANY, "v1beta1.NUMANode", "nodes")],
    "NUMANode": [("ID", 1, INT64, ONE, None, "ID")],
    "Device": [("ID", 1, STRING, ONE, None, "ID"), ("health", 2, STRING, ONE, None, "health"),
               ("topology", 3, MESSAGE, ONE, "v1beta1.TopologyInfo", "topology")],
    "PreStartContainerRequest": [("devices_ids", 1, STRING, MANY, None, "devicesIds")],
    "PreStartContainerResponse": [],
    "PreferredAllocationRequest": [
        ("container_requests", 1, MESSAGE, MANY, "v1beta1.ContainerPreferredAllocationRequest", "containerRequests")],
    "ContainerPreferredAllocationRequest": [("available_deviceIDs", 1, STRING, MANY, None, "availableDeviceIDs"),
                                            ("must_include_deviceIDs", 2, STRING, MANY, None, "mustIncludeDeviceIDs"),
                                            ("allocation_size", 3, INT32, ONE, None, "allocationSize")],
    "PreferredAllocationResponse": [
        ("container_responses", 1, MESSAGE, MANY, "v1beta1.ContainerPreferredAllocationResponse", "containerResponses")],
    "ContainerPreferredAllocationResponse": [("deviceIDs", 1, STRING, MANY, None, "deviceIDs")],
    "AllocateRequest": [("container_requests", 1, MESSAGE, MANY, "v1beta1.ContainerAllocateRequest", "containerRequests")],
    "ContainerAllocateRequest": [("devices_ids", 1, STRING, MANY, None, "devicesIds")],
    "CDIDevice": [("name", 1, STRING, ONE, None, "name")],
    "AllocateResponse": [("container_responses", 1, MESSAGE, MANY, "v1beta1.ContainerAllocateResponse", "containerResponses")],
    "ContainerAllocateResponse": [("envs", 1, MESSAGE, MANY, "v1beta1.ContainerAllocateResponse.EnvsEntry", "envs"),
                                  ("mounts", 2, MESSAGE, MANY, "v1beta1.Mount", "mounts"),
                                  ("devices", 3, MESSAGE, MANY, "v1beta1.DeviceSpec", "devices"),
                                  ("annotations", 4, MESSAGE, MANY, "v1beta1.ContainerAllocateResponse.AnnotationsEntry", "annotations"),
                                  ("cdi_devices", 5, MESSAGE, MANY, "v1beta1.CDIDevice", "cdiDevices")],
    "Mount": [("container_path", 1, STRING, ONE, None, "containerPath"), ("host_path", 2, STRING, ONE, None, "hostPath"),
              ("read_only", 3, BOOL, ONE, None, "readOnly")],
    "DeviceSpec": [("container_path", 1, STRING, ONE, None, "containerPath"), ("host_path", 2, STRING, ONE, None, "hostPath"),
                   ("permissions", 3, STRING, ONE, None, "permissions")],
}

# service -> [(method, input, output, server streaming)]
UPSTREAM_SERVICES = {
    "Registration": [("Register", "RegisterRequest", "Empty", False)],
    "DevicePlugin": [("GetDevicePluginOptions", "Empty", "DevicePluginOptions", False),
                     ("ListAndWatch", "Empty", "ListAndWatchResponse", True),
                     ("GetPreferredAllocation", "PreferredAllocationRequest", "PreferredAllocationResponse", False),
                     ("Allocate", "AllocateRequest", "AllocateResponse", False),
                     ("PreStartContainer", "PreStartContainerRequest", "PreStartContainerResponse", False)],
}

FILE = api_pb2.DESCRIPTOR


def _label(field: F) -> str:
    return MANY if field.is_repeated else ONE  # protobuf >= 6 dropped FieldDescriptor.label


def test_package_is_v1beta1() -> None:
    assert FILE.package == "v1beta1"


def test_every_message_field_matches_upstream() -> None:
    assert set(FILE.message_types_by_name) == set(UPSTREAM_MESSAGES)
    for name, expected in UPSTREAM_MESSAGES.items():
        message = FILE.message_types_by_name[name]
        actual = [(f.name, f.number, f.type, _label(f), f.message_type.full_name if f.message_type else None, f.json_name)
                  for f in sorted(message.fields, key=lambda f: f.number)]
        assert actual == expected, name


def test_map_fields_are_string_to_string() -> None:
    response = FILE.message_types_by_name["ContainerAllocateResponse"]
    for name in ("envs", "annotations"):
        entry = response.fields_by_name[name].message_type
        assert entry.GetOptions().map_entry
        assert [(f.name, f.number, f.type) for f in entry.fields] == [("key", 1, STRING), ("value", 2, STRING)]


def test_services_and_methods_match_upstream() -> None:
    assert set(FILE.services_by_name) == set(UPSTREAM_SERVICES)
    for service_name, methods in UPSTREAM_SERVICES.items():
        service = FILE.services_by_name[service_name]
        actual = [(m.name, m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods]
        assert sorted(actual) == sorted(methods), service_name
        assert not any(m.client_streaming for m in service.methods)
        assert service.full_name == f"v1beta1.{service_name}"  # gRPC path /v1beta1.<Service>/<Method>


def test_generated_code_is_current(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`make proto` output is committed; regenerating must give the same descriptor."""
    from pathlib import Path

    from grpc_tools import protoc

    proto_dir = Path(api_pb2.__file__).parent
    assert protoc.main(["protoc", f"-I{proto_dir}", f"--descriptor_set_out={tmp_path / 'set.pb'}",
                        str(proto_dir / "api.proto")]) == 0
    from google.protobuf import descriptor_pb2

    regenerated = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / "set.pb").read_bytes()).file[0]
    for message in regenerated.message_type:  # the gencode's embedded descriptor omits default json names
        for field in message.field:
            field.ClearField("json_name")
        for nested in message.nested_type:
            for field in nested.field:
                field.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto()
    FILE.CopyToProto(committed)
    assert regenerated.message_type == committed.message_type
    assert regenerated.service == committed.service
