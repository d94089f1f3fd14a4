"""kvminfo: KVM capabilities as Kubernetes node labels, and a /dev/kvm device plugin."""

__version__ = "0.1.0"
