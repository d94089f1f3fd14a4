"""Fuzzing (hypothesis): domain capabilities, configs and label values never crash kvminfo.

Each input goes through the product's real entry point for it (a replay file
through collect(), the whitelist and device plugin config loaders reading a
file), and each outcome is judged:
- accepted: every label is valid by NFD's rules (soak/nfd_rules.py, written
  independently of the product's validator) and its key is one kvminfo can
  make (hostile input never invents a key);
- rejected: a KvminfoError whose message is one line naming the file;
- anything else (an exception escaping, a source failing with "internal
  error") is a failure, recorded with the input that caused it.
Failures are recorded rather than asserted inside the hypothesis body so
that every run is counted and no shrinking replays inflate the counts.
"""

from __future__ import annotations

import copy
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DOMCAPS_FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvminfo.collect import collect
from kvminfo.common.errors import KvminfoError
from kvminfo.features.combine import combine
from kvminfo.features.hyperv import evidence_and_reasons
from kvminfo.features.hyperv_tables import ALL_FEATURES
from kvminfo.labels.render import CAP_PREFIX, CPU_VENDOR, HOST_MODEL, KUBEVIRT_HYPERV_PREFIX, NESTED, USABLE, VERSION_PREFIX, render_labels
from kvminfo.model import ProbeOptions, SourceResult, Status
from kvminfo.sources.facts import KvmFacts
from kvminfo.sources.kernel_whitelist import FEATURES as WHITELIST_FEATURES
from kvminfo.sources.kernel_whitelist import probe_kernel_whitelist, read_os_id
from kvminfo.sources.libvirt_facts import DomainCapabilities, HostModel, LibvirtFacts
from kvminfo_plugin.config import MAX_SLOTS, load_config_file
from soak.harness import FAILING_INPUTS_DIR, LONG, REPO, scaled
from soak.hostile import HOSTILE_STRINGS, hostile_text, mutated_bytes
from soak.nfd_rules import nfd_rejects

FAMILY = "Fuzzing"
EXAMPLES = scaled(1500, 10_000)
# The short variant gates CI, so it replays the same inputs every run (a red CI must
# mean a regression, not a lucky draw); the long variant explores with new seeds.
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG,
                         suppress_health_check=list(HealthCheck))

KNOWN_KEYS = frozenset({f"{CAP_PREFIX}{f}" for f in ALL_FEATURES} | {f"{KUBEVIRT_HYPERV_PREFIX}{f}" for f in ALL_FEATURES}
                       | {f"{VERSION_PREFIX}{f}" for f in WHITELIST_FEATURES}
                       | {USABLE, NESTED, CPU_VENDOR, HOST_MODEL})
# The label families beyond Hyper-V (kvminfo/labels/families.py): fixed keys, and stems followed by a
# CPU model or feature name from libvirt (checked by nfd_rejects like every key).
FAMILY_KEYS = frozenset(f"feature.node.kubernetes.io/kvm-info-{k}" for k in (
    "sev", "sev-es", "sev-snp", "tdx", "sgx", "sgx-epc-bytes", "tsc-frequency", "tsc-scalable", "max-vcpus"))
FAMILY_KEY_STEMS = ("feature.node.kubernetes.io/kvm-info-cpu-model-",
                    "feature.node.kubernetes.io/kvm-info-host-model-requires-")


def known_key(key: str) -> bool:
    return key in KNOWN_KEYS or key in FAMILY_KEYS or key.startswith(FAMILY_KEY_STEMS)


class Judge:
    """Runs one input through ``attempt`` and records the verdict in a Scenario.

    The first failing inputs are kept whole in soak/results/failing-inputs/ (the
    note shows only their start), so that a failure can be replayed.
    """

    def __init__(self, scenario: Any, path: Path) -> None:
        self.scenario, self.path = scenario, path
        self.accepted = self.rejected = 0

    def _keep(self, data: bytes) -> str:
        if len(self.scenario.failures) >= 5:
            return "not kept"
        FAILING_INPUTS_DIR.mkdir(parents=True, exist_ok=True)
        kept = FAILING_INPUTS_DIR / f"{self.path.name}.{len(self.scenario.failures)}"
        kept.write_bytes(data)
        return str(kept.relative_to(REPO))

    def __call__(self, data: bytes, attempt: Callable[[Path], dict[str, str]]) -> None:
        self.path.write_bytes(data)
        why = ""
        try:
            labels = attempt(self.path)
        except KvminfoError as err:
            self.rejected += 1
            message = str(err)
            if "\n" in message or str(self.path) not in message:
                why = f"rejection not one line naming the file: {message!r}"
        except Exception as err:  # noqa: BLE001 - exactly what the fuzzer is looking for
            why = f"{type(err).__name__}: {err}"
        else:
            self.accepted += 1
            why = "; ".join(f"{key}={value!r}: {problem}" for key, value in labels.items()
                            for problem in [nfd_rejects(key, value) or ("unknown key" if not known_key(key) else "")]
                            if problem)
        if why:
            why += f" <- input {data[:160]!r} (whole: {self._keep(data)})"
        self.scenario.record(not why, 0.0, why)
        self.scenario.notes = f"{self.accepted} accepted, {self.rejected} rejected with a one-line error"


# ---- domain capabilities -------------------------------------------------------------------------------------

# Only what real libvirt writes: the recorded fixtures, among them libvirt >= 11.9's <defaults>
# (text children, tests/fixtures/domcaps/libvirt-git-ace61064-...) and five non-x86 hosts.
RECORDED = tuple(p.read_text(encoding="utf-8") for p in sorted(DOMCAPS_FIXTURES.glob("*.xml")))
SEEDS = RECORDED
TAGS = sorted({el.tag for text in SEEDS for el in ET.fromstring(text).iter()} | {"defaults", "spinlocks", "vendor_id"})
FOCUS = ("features/hyperv", "features/hyperv/defaults", "cpu/mode[@name='host-model']", "cpu/mode[@name='custom']",
         "features", "vcpu")
ATTRS = ("supported", "name", "value", "usable", "max", "mode", "fallback", "retries")


@st.composite
def mutated_domcaps(draw: st.DrawFn) -> bytes:
    """A recorded document with structural edits (hostile text/attributes, moved, dropped, duplicated elements)."""
    root = ET.fromstring(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 10))):
        # Half the edits land in the parts kvminfo reads, the rest anywhere.
        focus = root.find(draw(st.sampled_from(FOCUS))) if draw(st.booleans()) else None
        elements = list((root if focus is None else focus).iter())
        target = elements[draw(st.integers(0, len(elements) - 1))]
        op = draw(st.sampled_from(("text", "text", "text", "attr", "attr", "drop", "add", "rename", "clone")))
        if op == "text":
            target.text = draw(hostile_text)
        elif op == "attr":
            target.set(draw(st.sampled_from(ATTRS)), draw(st.sampled_from(("yes", "no", "")) | hostile_text))
        elif op == "drop" and len(target):
            target.remove(target[draw(st.integers(0, len(target) - 1))])
        elif op == "add":
            child = ET.SubElement(target, draw(st.sampled_from(TAGS)))
            child.text = draw(st.none() | hostile_text)
            if draw(st.booleans()):
                child.set("supported", draw(st.sampled_from(("yes", "no"))))
        elif op == "rename":
            target.tag = draw(st.sampled_from(TAGS))
        elif op == "clone" and target is not root:
            root.append(copy.deepcopy(target))
    text = ET.tostring(root, encoding="unicode")
    return draw(mutated_bytes(text.encode("utf-8", "surrogatepass"), max_ops=2))


def _generated_element(draw: st.DrawFn, depth: int) -> ET.Element:
    element = ET.Element(draw(st.sampled_from(TAGS)))
    for name in draw(st.lists(st.sampled_from(ATTRS), max_size=2, unique=True)):
        element.set(name, draw(st.sampled_from(("yes", "no", "host-model", "features")) | hostile_text))
    element.text = draw(st.none() | hostile_text)
    if depth < 4:
        for _ in range(draw(st.integers(0, 4))):
            element.append(_generated_element(draw, depth + 1))
    return element


@st.composite
def generated_domcaps(draw: st.DrawFn) -> bytes:
    """A document built from libvirt's vocabulary, rooted at <domainCapabilities> (usually)."""
    root = _generated_element(draw, 0)
    if draw(st.integers(0, 9)):
        root.tag = "domainCapabilities"
    return ET.tostring(root, encoding="unicode").encode("utf-8", "surrogatepass")


def _labels_from_replay(path: Path) -> dict[str, str]:
    """The replay path of `kvminfo labels --no-kvm --domcaps-xml FILE` (collect, then render)."""
    report = collect(ProbeOptions(use_kvm=False, domcaps_xml=str(path)))
    libvirt = report.source("libvirt")
    if libvirt.status is not Status.OK:
        raise AssertionError(f"libvirt source {libvirt.status.value}: {libvirt.reason}")
    kubevirt_labels, _ = render_labels(report.sources, report.features, kubevirt_names=True)
    return {**report.labels, **kubevirt_labels}


def test_fuzz_domcaps(short_tmp: Path, scenario, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)  # sanitizing warnings are expected; the judge looks at results
    runs = scenario(FAMILY, "domcapabilities documents (mutated + generated)", "n/a")
    judge = Judge(runs, short_tmp / "domcaps.xml")

    @FUZZ_SETTINGS
    @given(st.one_of(mutated_domcaps(), mutated_domcaps(), generated_domcaps()))
    def fuzz(data: bytes) -> None:
        judge(data, _labels_from_replay)

    fuzz()
    runs.check(EXAMPLES)
    assert judge.accepted > EXAMPLES // 10 and judge.rejected > EXAMPLES // 20, (judge.accepted, judge.rejected)


# ---- kernel whitelist JSON -----------------------------------------------------------------------------------

OS_ID = read_os_id("/etc/os-release")
def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | hostile_text, _json_containers,
                           max_leaves=12)


@st.composite
def whitelist_configs(draw: st.DrawFn) -> bytes:
    check = {"os": OS_ID, "feature": draw(st.sampled_from(WHITELIST_FEATURES)), "kernelminver": "3.10",
             "kernelmaxver": "99.0"}
    config: dict[str, Any] = {"checks": [check, dict(check, feature="hyperv-lev2")]}
    for _ in range(draw(st.integers(0, 4))):
        checks = config.get("checks")
        in_check = isinstance(checks, list) and len(checks) == 2 and draw(st.booleans())
        holder = checks[draw(st.integers(0, 1))] if in_check else config
        if not isinstance(holder, dict):  # an earlier edit replaced it with a non-object
            continue
        key = draw(st.sampled_from(("checks", "osrelease", "kernversion", "os", "feature", "kernelminver",
                                    "kernelmaxver")) | hostile_text)
        if draw(st.booleans()):
            holder[key] = draw(json_values | st.sampled_from(("3.10.0-957.5.1.el7.x86_64", "²", "9" * 5000, "1..2")))
        else:
            holder.pop(key, None)
    if draw(st.integers(0, 9)) == 0:
        config = draw(json_values)
    if draw(st.integers(0, 19)) == 0:  # deeper than json's recursion allows
        return ('{"checks": ' + "[" * 100_000 + "]" * draw(st.integers(0, 100_000)) + "}").encode()
    text = json.dumps(config, ensure_ascii=draw(st.booleans()))
    return draw(mutated_bytes(text.encode("utf-8", "surrogatepass"), max_ops=2))


def _labels_from_whitelist(path: Path) -> dict[str, str]:
    source = probe_kernel_whitelist(str(path))
    if not source.ok:
        raise AssertionError(f"kernel-whitelist {source.status.value}: {source.reason}")
    labels, _ = render_labels([source], [])
    return labels


# ---- device plugin YAML --------------------------------------------------------------------------------------

VALID_PLUGIN_CONFIG = {
    "pluginDir": "/var/lib/kubelet/device-plugins", "cdiDir": "/var/run/cdi", "metricsPort": 0,
    "pollIntervalSeconds": 5,
    "resources": [{"name": "devices.kvminfo.io/kvm", "devices": ["/dev/kvm"], "slots": 1000, "permissions": "rw",
                   "cdi": True, "envs": {"KVM": "1"}, "mounts": [{"hostPath": "/dev/hugepages"}]},
                  {"name": "devices.kvminfo.io/tun", "devices": ["/dev/net/tun"], "cdiKind": "kvminfo.io/tun"}],
}
RAW_YAML = ("a: 2001-13-45\n", "resources: !!python/object:os.system x\n", "? [a]\n: b\n", "1: 2\nx: 3\n",
            "pollIntervalSeconds: .inf\n", "pollIntervalSeconds: .nan\n", "pollIntervalSeconds: 1e400\n",
            "slots: 0x10\n", "&a [*a]\n", "resources:\n- &r {name: devices.kvminfo.io/kvm, devices: [/dev/kvm]}\n- *r\n",
            "metricsPort: 99999999999999999999999999\n", "%YAML 9.9\n---\na: 1\n", "\ufeffresources: []\n",
            "x: !!binary AAAA\n", "resources: [{name: a/b, devices: [/x], slots: !!float 3}]\n",
            'a: "\\UF00ED36E"\n', "a: " + "[" * 5000 + "]" * 5000 + "\n")


@st.composite
def plugin_configs(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(mutated_bytes(draw(st.sampled_from(RAW_YAML)).encode(), max_ops=2))
    config = json.loads(json.dumps(VALID_PLUGIN_CONFIG))
    for _ in range(draw(st.integers(0, 4))):
        resource = config["resources"][draw(st.integers(0, 1))] if isinstance(config.get("resources"), list) \
            and len(config["resources"]) == 2 else config
        holder = draw(st.sampled_from((config, resource)))
        if not isinstance(holder, dict):  # an earlier edit replaced it with a non-mapping
            continue
        key = draw(st.sampled_from(("resources", "pluginDir", "cdiDir", "metricsPort", "pollIntervalSeconds",
                                    "name", "devices", "slots", "permissions", "cdi", "cdiKind", "envs", "mounts"))
                   | hostile_text)
        if draw(st.booleans()):
            holder[key] = draw(json_values | st.sampled_from((0, -1, MAX_SLOTS + 1, "wr", "rwmm", "relative/dev",
                                                              float("inf"), 2 ** 80)))
        else:
            holder.pop(key, None)
    text = yaml.safe_dump(config, allow_unicode=draw(st.booleans()))
    return draw(mutated_bytes(text.encode("utf-8", "surrogatepass"), max_ops=2))


def _extended_resource_problem(name: str) -> str | None:
    """Independent of the product: domain/name, domain a DNS subdomain outside kubernetes.io, name qualified."""
    if name.count("/") != 1:
        return "not domain/name"
    problem = nfd_rejects(name, "")  # same shape as an NFD label key: prefix rules + qualified name
    if problem and "namespace" not in problem:
        return problem
    return "kubernetes.io domain" if name.split("/")[0].endswith("kubernetes.io") else None


def _accepted_plugin_config(path: Path) -> dict[str, str]:
    config = load_config_file(path)
    problems = []
    for r in config.resources:
        problems += [p for bad, p in [
            (_extended_resource_problem(r.name) is not None, f"resource name {r.name!r}"),
            (not r.devices or not all(d.startswith("/") for d in r.devices), f"devices {r.devices!r}"),
            (not 1 <= r.slots <= MAX_SLOTS, f"slots {r.slots!r}"),
            (not r.permissions or set(r.permissions) - set("rwm"), f"permissions {r.permissions!r}"),
        ] if bad]
    if not 0 < config.poll_interval_s < 86400 * 365:
        problems.append(f"poll interval {config.poll_interval_s!r}")
    if problems:
        raise AssertionError(f"accepted an unusable config: {', '.join(problems)}")
    return {}


@pytest.mark.parametrize("what, strategy, attempt, file_name", [
    ("kernel whitelist JSON configs", whitelist_configs(), _labels_from_whitelist, "whitelist.json"),
    ("device plugin YAML configs", plugin_configs(), _accepted_plugin_config, "plugin.yaml"),
], ids=["whitelist-json", "plugin-yaml"])
def test_fuzz_configs(what: str, strategy: st.SearchStrategy[bytes], attempt: Callable[[Path], dict[str, str]],
                      file_name: str, short_tmp: Path, scenario, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)
    runs = scenario(FAMILY, what, "n/a")
    judge = Judge(runs, short_tmp / file_name)

    @FUZZ_SETTINGS
    @given(strategy)
    def fuzz(data: bytes) -> None:
        judge(data, attempt)

    fuzz()
    runs.check(EXAMPLES)
    assert judge.accepted > EXAMPLES // 20 and judge.rejected > EXAMPLES // 20, (judge.accepted, judge.rejected)


# ---- label values --------------------------------------------------------------------------------------------

def test_fuzz_label_values(short_tmp: Path, scenario) -> None:
    """Outside strings as CPU model (libvirt) and vendor (cpuinfo): never an invalid label."""
    runs = scenario(FAMILY, "label values (CPU model, vendor)", "n/a")
    judge = Judge(runs, short_tmp / "value.txt")

    def render(path: Path) -> dict[str, str]:
        raw = path.read_bytes().decode("utf-8", "surrogatepass")
        kvm = SourceResult("kvm", Status.OK, "", KvmFacts(cpu_vendor=raw, nested=True, api_version=12, caps={}))
        libvirt = SourceResult("libvirt", Status.OK, "", LibvirtFacts(domcaps=DomainCapabilities(
            host_model=HostModel(model=raw, vendor=raw), hyperv=None)))
        sources = [kvm, libvirt]
        labels, _ = render_labels(sources, combine(evidence_and_reasons(sources)[0]))
        return labels

    @FUZZ_SETTINGS
    @given(hostile_text | st.sampled_from(HOSTILE_STRINGS))
    def fuzz(raw: str) -> None:
        judge(raw.encode("utf-8", "surrogatepass"), render)

    fuzz()
    runs.check(EXAMPLES)
