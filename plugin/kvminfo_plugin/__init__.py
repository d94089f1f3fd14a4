"""kvminfo device plugin (imported as kvminfo_plugin): inventory -> gRPC server -> kubelet registration/watch."""
