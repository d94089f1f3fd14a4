"""docs/device-plugin.md's config examples run as documented: the real process,
the kubelet emulator, the page's own YAML (only the directories and the metrics
port replaced by flags, as the Flags table says flags do)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cdi_rules
import pytest
import yaml
from plugin_harness import REPO, kubelet, plugin_process

PAGE = REPO / "docs" / "device-plugin.md"


def _device_plugin_examples() -> list[dict[str, object]]:
    examples = []
    for block in re.findall(r"```yaml\n(.*?)```", PAGE.read_text(), re.S):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and isinstance(document.get("resources"), list):
            examples.append(document)
    return examples


EXAMPLES = _device_plugin_examples()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="kvminfo-dp-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_the_readme_has_a_config_example() -> None:
    assert EXAMPLES, f"no YAML config example found in {PAGE}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_config_example_runs(short_dir: Path, example: dict[str, object]) -> None:
    config = short_dir / "plugin.yaml"
    config.write_text(yaml.safe_dump(example))
    plugin_dir, cdi_dir = short_dir / "dp", short_dir / "cdi"
    plugin_dir.mkdir()
    resources = example["resources"]
    assert isinstance(resources, list)
    with kubelet(plugin_dir) as k:
        process = plugin_process("--config", str(config), "--plugin-dir", str(plugin_dir), "--cdi-dir", str(cdi_dir),
                                 "--metrics-port", "0")
        try:
            for resource in resources:
                k.wait_registered(resource["name"], timeout_s=10)
                groups = len(resource.get("groups", [None]))
                assert len(k.latest(resource["name"])) == groups * resource.get("slots", 1000), resource["name"]
            if any(r["name"] == "devices.kvminfo.io/kvm" for r in resources):
                assert set(k.latest("devices.kvminfo.io/kvm").values()) == {"Healthy"}  # the real /dev/kvm
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=5)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr
    for resource in resources:
        if resource.get("cdi"):
            kind = resource.get("cdiKind", resource["name"])
            spec = json.loads((cdi_dir / (kind.replace("/", "-") + ".json")).read_text())
            assert cdi_rules.problems(spec) == [] and spec["kind"] == kind


def test_readme_list_and_watch_size_example_prints_what_it_says(short_dir: Path) -> None:
    """Seen by a new user: the documented 6400000-byte / 65536-slot line came with no config, and the
    /dev/kvm + /dev/net/tun groups they tried gave 6000000 / 69905. The page now states the config."""
    text = PAGE.read_text()
    block = next(b for b in re.findall(r"```console\n(.*?)```", text, re.S) if "ListAndWatch message" in b)
    lines = [line.strip("\n")[2:] if line.startswith("  ") else line for line in block.splitlines()]
    config_start, run = lines.index("$ cat plugin.yaml") + 1, lines.index("$ kvminfo device-plugin --config plugin.yaml")
    config = short_dir / "plugin.yaml"
    config.write_text("\n".join(lines[config_start:run]) + "\n")
    process = plugin_process("--config", str(config), "--plugin-dir", str(short_dir / "dp"))
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 2
    assert stderr.strip().replace(str(config), "plugin.yaml") == lines[run + 1].strip(), stderr
    # and the figures the page gives for the groups the user tried
    other = short_dir / "kvm-tun.yaml"
    other.write_text("resources:\n  - name: example.com/kvm\n"
                     "    groups: [{devices: [/dev/kvm]}, {devices: [/dev/net/tun]}]\n    slots: 100000\n")
    process = plugin_process("--config", str(other), "--plugin-dir", str(short_dir / "dp"))
    _, stderr = process.communicate(timeout=20)
    assert "a 6000000-byte ListAndWatch message" in stderr and "at most 69905 slots fit" in stderr, stderr
    assert "it is 6000000 bytes and at most 69905 slots fit" in " ".join(text.split())
