"""Generic helpers shared by the labeller (kvminfo) and the device plugin (kvminfo_plugin)."""
