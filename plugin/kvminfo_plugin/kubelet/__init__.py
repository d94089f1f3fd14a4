"""The kubelet side: the generated device plugin API v1beta1, the gRPC server per
resource, and registration with the kubelet (kept up whatever the kubelet does)."""
