"""Generated gRPC/protobuf modules for the kubelet device plugin API v1beta1 (`make proto`)."""
