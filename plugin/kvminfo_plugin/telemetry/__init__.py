"""What the plugin tells operators: Prometheus metrics with /healthz, and log helpers."""
