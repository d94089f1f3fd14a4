"""A DaemonSet update with maxSurge: two instances of the plugin overlap on one
node, against the kubelet emulator's lookup-by-name clean-up (the real
kubelet 1.36's runClient; see tests/kubelet_emulator.py)."""

from __future__ import annotations

import time
from pathlib import Path

from plugin_harness import TEST_RESOURCE, device_settings, kubelet, running_plugin


def test_old_instance_exiting_leaves_the_new_one_registered_within_milliseconds(plugin_dir: Path,
                                                                                device: Path) -> None:
    settings = device_settings(plugin_dir, device)
    with kubelet(plugin_dir) as k:
        old = running_plugin(settings)
        old.__enter__()
        try:
            k.wait_registered(TEST_RESOURCE)
            with running_plugin(settings):
                # The new pod serves over the old one's socket and registers; the kubelet now
                # holds the new client under the resource name, the old stream stays open.
                new = k.wait_registered(TEST_RESOURCE, count=2)
                assert not k.deregistrations
                old.__exit__(None, None, None)  # SIGTERM to the old pod: its stream ends
                old = None
                # The kubelet looked the client up by name and dropped the NEW instance ...
                k.wait_for(lambda: new.deregistered_at is not None, what="the kubelet dropping the new instance")
                assert k.deregistrations[0] is new
                dropped_at = new.deregistered_at
                assert dropped_at is not None

                # ... which registers again at once, not after a grace period.
                def back() -> float | None:
                    later = [e for e in k.endpoints.values() if e.registered_at > dropped_at and e.updates]
                    return later[0].updates[0][0] if later else None

                listed_at = k.wait_for(back, timeout_s=5.0, what="a new registration with a device list")
                gap_ms = (listed_at - dropped_at) * 1000  # type: ignore[operator]
                print(f"kubelet dropped the new instance -> its device list again: {gap_ms:.1f} ms")
                # The old rule waited 250 ms for a new stream before registering again.
                assert gap_ms < 200, gap_ms
                time.sleep(0.5)  # and it stays registered: no loop of registrations
                stable = k.registrations[-1][0]
                assert TEST_RESOURCE in k.endpoints and set(k.latest(TEST_RESOURCE).values()) == {"Healthy"}
                assert len(k.registrations) <= 4 and time.monotonic() - stable > 0.4
        finally:
            if old is not None:
                old.__exit__(None, None, None)
