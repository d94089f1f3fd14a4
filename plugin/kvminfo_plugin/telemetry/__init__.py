"""What the plugin tells operators: its Prometheus series (served with /healthz by kvminfo.common.metrics_http) and log helpers."""
