"""The operator documentation cannot drift: README.md and docs/*.md (docs/dev/ is the
development log and is not checked here).

Every fenced block on those pages carries a marker on the line before it,
``<!-- check: KIND [ARGS] -->``, and is run or checked by its kind:

- ``commands``: each shell command, by its program. ``kvminfo`` and
  ``kvminfo-device-plugin`` run for real in a sandbox per page: its working
  directory holds the inputs the page states (``INPUTS``: recorded.xml,
  sev-snp-host.xml, ...), HOME is there, NFD's directories
  (/etc/kubernetes/node-feature-discovery) and the labellers' libvirt cache
  volume (/var/cache/kvminfo) are mapped into it, and an API
  server stand-in answers behind ~/.kube/config and $KUBECONFIG with
  NODE_NAME/POD_NAMESPACE set as the downward API sets them ($(hostname)
  is that node's name too). A one-shot
  command must exit 0 and do what it says (a feature file written, a
  NodeFeature created); one with --interval runs until it did that, then
  SIGTERM must end it with status 0. ``kubectl apply|delete -k DIR`` renders
  DIR with tests/test_deploy.py's kustomize; every other kubectl command may
  name only objects the rendered deploy/ has (namespace, ds/NAME, pods,
  label selectors, -L labels kvminfo writes, the device plugin's resource as
  its config file in the plugin's generated ConfigMap says), a NodeFeature
  only as publish names it (kvminfo-NODE); ``label`` sets only a namespace
  label deploy/ sets or a node label a shipped pod selects on; and
  ``exec ... -- CMD`` checks CMD in turn. ``docker|podman build|push``:
  the Dockerfile is there and the tag is the project's version;
  ``kustomize edit set image OLD=NEW``: OLD is the kustomization's images
  entry; ``rm -f PATH``: a file a shipped DaemonSet writes. Any other program
  fails the test: it has no checker yet.
- ``output``: ``$ command`` lines, each followed by its exact stdout+stderr
  (a ``...`` line matches any lines); ``$ cat FILE`` followed by lines writes
  FILE; ``$ echo $?`` shows the exit status of the command before it.
- ``yaml-in PATH``: the YAML is contained in a document of the shipped PATH
  (every key and value of a mapping, every item of a list, at any depth).
- ``plugin-config``: a device plugin config the plugin's own loader accepts.
- ``pod-recipe CMD``: a Pod that validates against the Kubernetes schema,
  requests the device plugin's resource, and whose node selector the labels
  of CMD (run as in ``commands``) satisfy.
- ``overlay FILE``: a kustomization written to FILE in the sandbox (deploy/
  beside it) that renders and retargets every kvminfo image it contains.
- ``diagram``: a picture; no line of it is a shell prompt.

And on every page: relative links and their anchors resolve; every repository
path named in inline code exists; every inline ``kubectl`` command is checked as
in a ``commands`` block; every inline ``kvminfo CMD --option`` names an option of CMD; every
``kvm-info-*`` label named is one kvminfo writes; and no page carries an issue
number, a commit hash, a test count or a description of the development machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from apiserver_standin import ApiServerStandin
from cli_run import POD_ENVIRONMENT
from conftest import DOMCAPS_FIXTURES, FIXTURES, KVMINFO, REPO
from kvm_fakes import HyperVKernel
from test_deploy import DEPLOY, PARTS, all_containers, nodefeature_spec_with, pod_templates, resolve

from kvminfo_plugin import config as plugin_config

PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
NFD_DIR = "/etc/kubernetes/node-feature-discovery"
LIBVIRT_CACHE = "/var/cache/kvminfo"  # the labellers' libvirt-cache volume (their embedded libvirt's root)
VERSION = next(line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines()
               if line.startswith("version = "))
# The inputs the pages state, by the name they use (each page says what the file is).
INPUTS: dict[str, Path | str] = {
    "recorded.xml": DOMCAPS_FIXTURES / "virt-manager-kvm-x86_64-latest.xml",  # a Hyper-V capable Intel host
    "sev-snp-host.xml": DOMCAPS_FIXTURES / "libvirt-git-003b5731-qemu_10.0.0-q35.x86_64+amdsev.xml",
    "kvm-version-info.json": FIXTURES / "whitelist" / "kvm-info.json",  # the original plugin's whitelist
    "obsolete.txt": "486 pentium pentium2 pentium3 qemu64 kvm64\n",  # "a list of CPU model names"
}
NODE = "node-1"
NAMESPACE = "kvminfo"
MARKER = re.compile(r"^[ \t]*<!-- check: (?P<kind>[\w-]+)(?: (?P<args>.*?))? -->[ \t]*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[\w-]*)[ \t]*$")


# -- the pages' blocks ---------------------------------------------------------------------------

@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    kind: str | None
    args: str
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent = opening["indent"]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end]]
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        found.append(Block(page, i + 1, marker["kind"] if marker else None, (marker["args"] or "") if marker else "",
                           "\n".join(body) + "\n"))
        i = end + 1
    return found


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    return re.sub(r"^[ \t]*```[\w-]*[ \t]*\n.*?^[ \t]*```[ \t]*$", "", page.read_text(), flags=re.S | re.M)


def inline_code(page: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose(page))


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


# -- what the repository ships ---------------------------------------------------------------------

@dataclass
class Shipped:
    objects: list[dict[str, Any]]
    namespaces: set[str] = field(default_factory=set)
    names: set[tuple[str, str]] = field(default_factory=set)  # (kind, name)
    pod_labels: list[dict[str, str]] = field(default_factory=list)
    resources: set[str] = field(default_factory=set)

    def has(self, kind: str, name: str) -> bool:
        return (kind, name) in self.names


@pytest.fixture(scope="module")
def shipped() -> Shipped:
    objects = [o for part in PARTS for o in resolve(DEPLOY / part)]
    found = Shipped(objects)
    for obj in objects:
        meta = obj.get("metadata", {})
        found.names.add((obj["kind"], meta.get("name", "")))
        found.namespaces.add(meta.get("namespace", "default"))
        if obj["kind"] == "Namespace":
            found.namespaces.add(meta["name"])
        if obj["kind"] == "DaemonSet":
            found.pod_labels.append(obj["spec"]["template"]["metadata"].get("labels", {}))
        elif obj["kind"] == "Pod":
            found.pod_labels.append(meta.get("labels", {}))
    for document in plugin_configs(objects):
        found.resources |= {r.name for r in plugin_config.config_from_mapping(document).resources}
    assert found.resources, "the device plugin's ConfigMap was not found in deploy/"
    return found


def plugin_configs(objects: list[dict[str, Any]]) -> Iterator[Any]:
    """The config file each shipped device plugin reads: its ``--config PATH``, in the ConfigMap
    volume mounted at PATH's directory (by its generated name), under PATH's file name."""
    config_maps = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o.get("data", {})
                   for o in objects if o["kind"] == "ConfigMap"}
    for obj in objects:
        if obj["kind"] != "DaemonSet":
            continue
        spec = obj["spec"]["template"]["spec"]
        volumes = {v["name"]: v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v}
        for container in all_containers(spec):
            path = _option_value(container.get("command", []) + container.get("args", []), "--config")
            if path is None or "device-plugin" not in " ".join(container.get("command", []) + container.get("args", [])):
                continue
            (volume,) = [m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == str(Path(path).parent)]
            data = config_maps[(obj["metadata"].get("namespace"), volumes[volume])]
            yield yaml.safe_load(data[Path(path).name])


def _help(*command: str) -> str:
    done = subprocess.run([str(KVMINFO), *command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


COMMANDS = ("probe", "labels", "features-file", "publish", "device-plugin")


@pytest.fixture(scope="module")
def options() -> dict[str, set[str]]:
    """Each command's options, from its own --help."""
    return {command: set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", _help(command))) for command in COMMANDS}


@pytest.fixture(scope="module")
def known_labels(shipped: Shipped) -> set[str]:
    """Label names (after feature.node.kubernetes.io/) kvminfo really writes: every recording in
    tests/fixtures replayed with every family, a Hyper-V capable kernel injected at the ioctl layer,
    the NodeFeatureRule sample's labels, and the names `kvminfo labels --help` lists."""
    names: set[str] = set()
    for recording in sorted(DOMCAPS_FIXTURES.glob("*.xml")):
        if "tcg" in recording.name:  # a TCG answer is refused as a replay
            continue
        done = subprocess.run([str(KVMINFO), "labels", "--no-kvm", "--domcaps-xml", str(recording), "--family", "all"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        names |= {line.split("=", 1)[0] for line in done.stdout.splitlines()}
    names |= set(nodefeature_spec_with(HyperVKernel())["labels"])
    for obj in shipped.objects:
        if obj["kind"] == "NodeFeatureRule":
            names |= {key for rule in obj["spec"]["rules"] for key in rule.get("labels", {})}
    text = re.sub(r"-\s+(?=[a-z])", "-", " ".join(_help("labels").split()))  # argparse wraps at hyphens
    for base, suffix in re.findall(r"(kvm-info-[\w-]+)\[(-[\w-]+)\]", text):
        names |= {base, base + suffix}
    for first, rest in re.findall(r"(kvm-info-[\w-]+)((?:, -[\w-]+)+)", text):
        names |= {first} | {"kvm-info" + more for more in re.findall(r"-[\w-]+", rest)}
    names |= set(re.findall(r"kvm-info-[\w-]*[\w]", text))
    return {name.removeprefix("feature.node.kubernetes.io/") for name in names}


# -- the sandbox commands run in ------------------------------------------------------------------

@dataclass
class Sandbox:
    root: Path
    standin: ApiServerStandin
    last_status: int = 0
    cwd: str = "."  # a `cd DIR` of the current line (repository-relative), as in a subshell

    def path(self, text: str) -> str:
        return text.replace(NFD_DIR, str(self.root / "nfd")).replace(LIBVIRT_CACHE, str(self.root / "cache"))

    def unpath(self, text: str) -> str:
        return (text.replace(str(self.root / "nfd"), NFD_DIR).replace(str(self.root / "cache"), LIBVIRT_CACHE)
                .replace(str(self.root) + "/", ""))

    def env(self) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if k not in POD_ENVIRONMENT}
        return {**environ, "HOME": str(self.root), "PATH": f"{KVMINFO.parent}:{environ.get('PATH', '/usr/bin:/bin')}",
                "KUBECONFIG": str(self.root / ".kube" / "config"), "NODE_NAME": NODE, "POD_NAMESPACE": NAMESPACE}

    def words(self, argv: list[str]) -> list[str]:
        """The shell expansions the pages use: $(hostname), ~/, the NFD directories."""
        expanded = []
        for word in argv:
            word = word.replace("$(hostname)", NODE)  # the sandbox's node: real host names differ between machines
            if word.startswith("~/"):
                word = str(self.root) + word[1:]
            expanded.append(self.path(word))
        return expanded


@contextlib.contextmanager
def sandbox(standin: ApiServerStandin) -> Iterator[Sandbox]:
    # Not tmp_path: the device plugin's socket paths must stay short.
    root = Path(tempfile.mkdtemp(prefix="kvminfo-docs."))
    try:
        for name, source in INPUTS.items():
            (root / name).write_text(source if isinstance(source, str) else source.read_text())
        for directory in ("features.d", "source.d"):
            (root / "nfd" / directory).mkdir(parents=True)
        (root / "cache").mkdir()  # an emptyDir: there, and empty
        (root / ".kube").mkdir()
        standin.write_kubeconfig(root / ".kube" / "config")
        (root / "deploy").symlink_to(DEPLOY)  # for overlays: ../deploy
        yield Sandbox(root, standin)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def logical_lines(text: str) -> list[str]:
    return [line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.lstrip().startswith("#")]


def simple_commands(line: str) -> list[list[str]]:
    """One shell line -> its simple commands (split at && || ; |, subshell parentheses dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="();&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        elif token not in ("(", ")"):
            commands[-1].append(token)
    return [c for c in commands if c]


def _option_value(argv: list[str], *names: str) -> str | None:
    for i, word in enumerate(argv):
        for name in names:
            if word == name and i + 1 < len(argv):
                return argv[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def run_kvminfo(box: Sandbox, argv: list[str], where: str) -> subprocess.CompletedProcess:
    """Run a kvminfo command as the page shows it; a looping one until it did its job, then SIGTERM."""
    argv = box.words(argv)
    program = KVMINFO if argv[0] == "kvminfo" else KVMINFO.with_name(argv[0])
    command = argv[1] if len(argv) > 1 else ""
    output = _option_value(argv, "--output", "-o")
    requests_before = len(box.standin.seen)

    def done_its_job() -> bool:
        if command == "features-file":
            return output is not None and Path(output).is_file()
        if command == "publish":  # this run asked the API server, and the object is there
            node = _option_value(argv, "--node-name") or NODE
            namespace = _option_value(argv, "--namespace") or NAMESPACE
            return (len(box.standin.seen) > requests_before
                    and box.standin.get_object(namespace, f"kvminfo-{node}") is not None)
        return True

    if output is not None:
        Path(output).unlink(missing_ok=True)
    if "--interval" not in argv:
        done = subprocess.run([str(program), *argv[1:]], capture_output=True, text=True, timeout=120, env=box.env(),
                              cwd=box.root)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (where, argv, done.stderr)
        assert done_its_job(), (where, argv, done.stderr)
        return done
    process = subprocess.Popen([str(program), *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=box.env(), cwd=box.root)
    try:
        stop = threading.Event()
        for _ in range(600):
            if done_its_job() or process.poll() is not None or stop.wait(0.1):
                break
        assert process.poll() is None, (where, argv, process.communicate()[1])
        assert done_its_job(), (where, argv, "did not do its job within 60 s")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0 and "Traceback" not in stderr, (where, argv, stderr)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


# -- checkers, one per program --------------------------------------------------------------------

def check_render(directory: str, box: Sandbox, where: str) -> list[dict[str, Any]]:
    target = (REPO / directory) if (REPO / directory).is_dir() else (box.root / directory)
    assert (target / "kustomization.yaml").is_file(), f"{where}: -k {directory}: no kustomization there"
    objects = resolve(target)
    assert objects, f"{where}: -k {directory} renders nothing"
    return objects


def _placeholder(name: str) -> bool:
    return bool(re.search(r"[A-Z]", name))  # NODE, kvminfo-NODE, POD: stand for the reader's own names


def check_kubectl(argv: list[str], box: Sandbox, shipped: Shipped, labels: set[str], where: str) -> None:
    args = argv[1:]
    namespace = _option_value(args, "-n", "--namespace")
    if namespace is not None:
        assert namespace in shipped.namespaces, f"{where}: namespace {namespace} is not one deploy/ uses"
    if "--" in args:
        inner = args[args.index("--") + 1:]
        args = args[:args.index("--")]
        check_command(inner, box, shipped, labels, where)
    words = [w for i, w in enumerate(args) if not w.startswith("-") and not (i > 0 and args[i - 1] in ("-n", "-o", "-L", "-l"))]
    verb = words[0]
    if verb in ("apply", "delete") and "-k" in args:
        check_render(_option_value(args, "-k") or "", box, where)
        return
    assert verb in ("get", "wait", "logs", "rollout", "exec", "describe", "label", "delete"), \
        f"{where}: no checker for kubectl {verb}"
    kinds = {"ds": "DaemonSet", "daemonset": "DaemonSet", "pod": "Pod", "pods": "Pod", "namespace": "Namespace",
             "nodefeature": "NodeFeature", "nodefeatures": "NodeFeature"}
    objects = words[2:] if verb == "rollout" else words[1:]
    if verb in ("get", "describe", "label", "delete") and objects and objects[0] in kinds and len(objects) > 1:
        objects = [f"{objects[0]}/{name}" for name in objects[1:] if "=" not in name]
    if verb == "logs" and objects and "/" not in objects[0]:
        objects = [f"pod/{objects[0]}"]
    if verb == "delete":
        assert all("/" in word for word in objects), f"{where}: kubectl delete names no object"
    for word in objects:
        kind, _, name = word.partition("/")
        if kinds.get(kind) == "NodeFeature":  # made at run time by `kvminfo publish`: kvminfo-<node>
            assert not name or re.fullmatch(r"kvminfo-[A-Z]+", name), f"{where}: {word}: publish names its object kvminfo-NODE"
        elif kind in kinds and name and not _placeholder(name):
            assert shipped.has(kinds[kind], name), f"{where}: {word} is not in deploy/"
    for label in [v for i, v in enumerate(args) if i > 0 and args[i - 1] == "-L"]:
        assert label.removeprefix("feature.node.kubernetes.io/") in labels, f"{where}: -L {label}: kvminfo writes no such label"
    for selector in [v for i, v in enumerate(args) if i > 0 and args[i - 1] == "-l"]:
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        assert any(wanted.items() <= pod.items() for pod in shipped.pod_labels), f"{where}: -l {selector} selects no pod"
    for escaped in re.findall(r"devices\\\.[\w\\.]+/[\w-]+", " ".join(args)):
        assert escaped.replace("\\", "") in shipped.resources, f"{where}: {escaped} is not a resource the plugin serves"
    if verb == "label":
        pairs = [w.split("=", 1) for w in words[2:] if "=" in w]
        assert pairs, f"{where}: kubectl label without a key=value"
        if words[1] in ("node", "nodes"):  # a label the shipped DaemonSets select nodes by
            selectors = [spec.get("nodeSelector", {}) for _, spec in pod_templates(shipped.objects)]
            for key, value in pairs:
                assert any(s.get(key) == value for s in selectors), f"{where}: {key}={value}: no shipped pod selects on it"
        else:
            assert words[1] == "namespace", f"{where}: no checker for kubectl label {words[1]}"
            namespace_object = next(o for o in shipped.objects if o["kind"] == "Namespace")
            for key, _ in pairs:
                assert key in namespace_object["metadata"]["labels"], f"{where}: {key}: not a label deploy/ sets"


def check_command(argv: list[str], box: Sandbox, shipped: Shipped, labels: set[str], where: str) -> None:
    program = argv[0]
    if program in ("kvminfo", "kvminfo-device-plugin"):
        run_kvminfo(box, argv, where)
    elif program == "kubectl":
        check_kubectl(argv, box, shipped, labels, where)
    elif program in ("docker", "podman") and argv[1] in ("build", "push"):
        image = _option_value(argv, "-t", "--tag") if argv[1] == "build" else argv[2]
        assert image is not None and image.rsplit(":", 1)[-1] == VERSION, f"{where}: {image}: the tag is not {VERSION}"
        if argv[1] == "build":
            assert argv[-1] == "." and (REPO / "Dockerfile").is_file(), f"{where}: build the repository's Dockerfile"
    elif program == "cd":
        assert (REPO / argv[1]).is_dir(), f"{where}: cd {argv[1]}: no such directory"
        box.cwd = argv[1]
    elif program == "kustomize" and argv[1:4] == ["edit", "set", "image"]:
        old, _, new = argv[4].partition("=")
        kustomization = yaml.safe_load((REPO / box.cwd / "kustomization.yaml").read_text())
        assert old in {rule["name"] for rule in kustomization.get("images", [])}, f"{where}: {old} is no images entry"
        assert new.rsplit(":", 1)[-1] == VERSION, f"{where}: {new}: the tag is not {VERSION}"
    elif program == "rm" and argv[1] == "-f":
        path = Path(argv[2])
        writers = [spec for _, spec in pod_templates(shipped.objects)
                   if any(v.get("hostPath", {}).get("path") == str(path.parent) for v in spec.get("volumes", []))]
        assert any(path.name in " ".join(map(str, c.get("args", []) + c.get("command", [])))
                   for spec in writers for c in all_containers(spec)), f"{where}: no shipped DaemonSet writes {path}"
    else:
        pytest.fail(f"{where}: no checker for {shlex.join(argv)!r}: add one to tests/test_docs.py")


def check_commands(block: Block, box: Sandbox, shipped: Shipped, labels: set[str]) -> None:
    lines = logical_lines(block.text)
    assert lines, f"{block.where()}: no commands"
    for line in lines:
        for argv in simple_commands(line):
            check_command(argv, box, shipped, labels, block.where())
        box.cwd = "."


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; a '...' line stands for any number of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


def check_output(block: Block, box: Sandbox) -> None:
    steps: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"{block.where()}: output before the first '$ ' command"
            steps[-1][1].append(line)
    assert steps, f"{block.where()}: no '$ ' command"
    for command, expected in steps:
        argv = shlex.split(command)
        if argv[0] == "cat":
            (box.root / argv[1]).write_text("\n".join(expected) + "\n")
            continue
        if argv == ["echo", "$?"]:
            assert expected == [str(box.last_status)], f"{block.where()}: exit status {box.last_status}, shown {expected}"
            continue
        assert argv[0] in ("kvminfo", "kvminfo-device-plugin"), f"{block.where()}: no checker for {command!r}"
        argv = box.words(argv)
        program = KVMINFO if argv[0] == "kvminfo" else KVMINFO.with_name(argv[0])
        done = subprocess.run([str(program), *argv[1:]], capture_output=True, text=True, timeout=120, env=box.env(),
                              cwd=box.root)
        box.last_status = done.returncode
        actual = box.unpath(done.stdout + done.stderr).splitlines()
        assert matches(expected, actual), f"{block.where()}: {command}\nshown:\n" + "\n".join(expected) + \
            "\nprinted:\n" + "\n".join(actual)


def contained(part: Any, whole: Any) -> bool:
    """``part`` appears in ``whole``: at its root or under any key or item."""
    def fits(a: Any, b: Any) -> bool:
        if isinstance(a, dict):
            return isinstance(b, dict) and all(k in b and fits(v, b[k]) for k, v in a.items())
        if isinstance(a, list):
            return isinstance(b, list) and all(any(fits(x, y) for y in b) for x in a)
        return a == b

    if fits(part, whole):
        return True
    children = whole.values() if isinstance(whole, dict) else whole if isinstance(whole, list) else []
    return any(contained(part, child) for child in children)


def check_yaml_in(block: Block) -> None:
    snippet = yaml.safe_load(block.text)
    path = REPO / block.args
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert any(contained(snippet, d) for d in documents), f"{block.where()}: not in {block.args} as shown"


def check_plugin_config(block: Block) -> None:
    config = plugin_config.config_from_mapping(yaml.safe_load(block.text))
    assert config.resources, block.where()


def _node_selector(pod: dict[str, Any]) -> dict[str, list[str]]:
    spec = pod["spec"]
    wanted = {key: [value] for key, value in spec.get("nodeSelector", {}).items()}
    terms = spec.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {})
    for term in terms.get("nodeSelectorTerms", []):
        wanted |= {e["key"]: e["values"] for e in term["matchExpressions"]}
    return wanted


def check_pod_recipe(block: Block, box: Sandbox, shipped: Shipped) -> None:
    pod = yaml.safe_load(block.text)
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)  # raises when invalid
    wanted = _node_selector(pod)
    assert wanted and all(key.startswith("feature.node.kubernetes.io/kvm-info-") for key in wanted), block.where()
    assert any(set(c["resources"]["limits"]) & shipped.resources for c in pod["spec"]["containers"]), block.where()
    done = run_kvminfo(box, shlex.split(block.args), block.where())
    labels = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert all(labels.get(key) in values for key, values in wanted.items()), (block.where(), wanted, labels)


def check_overlay(block: Block, box: Sandbox) -> None:
    target = box.root / block.args
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.text)
    overlay = yaml.safe_load(block.text)
    (rule,) = overlay["images"]
    images = {c["image"] for _, spec in pod_templates(resolve(target.parent)) for c in all_containers(spec)}
    assert images == {f"{rule['newName']}:{rule['newTag']}"}, f"{block.where()}: {images}"
    assert str(rule["newTag"]) == VERSION, block.where()


def check_diagram(block: Block) -> None:
    for line in block.text.splitlines():
        assert not re.match(r"\s*(\$ |kubectl |kvminfo )", line), f"{block.where()}: a command in a diagram: {line}"


# -- the tests -------------------------------------------------------------------------------------

KINDS = ("commands", "output", "yaml-in", "plugin-config", "pod-recipe", "overlay", "diagram")


def test_every_operator_page_is_here_and_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for name in ("install", "verify", "labels", "vm-pods", "device-plugin", "cli", "troubleshooting",
                 "upgrade-uninstall", "nfd-hooks"):
        assert (REPO / "docs" / f"{name}.md").is_file(), name
        assert f"(docs/{name}.md" in readme, name
    assert len(readme.splitlines()) < 300
    first_screen = "\n".join(readme.splitlines()[:60])
    assert "## Quick start" in first_screen and "kubectl apply -k deploy/" in first_screen


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.where() for b in ALL_BLOCKS])
def test_every_block_has_a_known_check(block: Block) -> None:
    assert block.kind in KINDS, f"{block.where()}: a fenced block needs <!-- check: KIND --> before it, KIND in {KINDS}"
    if block.kind in ("yaml-in", "pod-recipe", "overlay"):
        assert block.args, f"{block.where()}: {block.kind} needs an argument"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_blocks_run_as_shown(page: Path, standin: ApiServerStandin, shipped: Shipped,
                                  known_labels: set[str]) -> None:
    with sandbox(standin) as box:
        for block in blocks(page):
            if block.kind == "commands":
                check_commands(block, box, shipped, known_labels)
            elif block.kind == "output":
                check_output(block, box)
            elif block.kind == "yaml-in":
                check_yaml_in(block)
            elif block.kind == "plugin-config":
                check_plugin_config(block)
            elif block.kind == "pod-recipe":
                check_pod_recipe(block, box, shipped)
            elif block.kind == "overlay":
                check_overlay(block, box)
            elif block.kind == "diagram":
                check_diagram(block)


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation but - and _ dropped, blanks to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = prose(page)
    return ({_slug(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}
            | set(re.findall(r'<a id="([^"]+)"></a>', text)))


def check_links(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: link {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: link {target}: no such heading"


DEV_PAGES = sorted((REPO / "docs" / "dev").glob("*.md"))


@pytest.mark.parametrize("page", DEV_PAGES, ids=[str(p.relative_to(REPO)) for p in DEV_PAGES])
def test_development_page_links_resolve(page: Path) -> None:
    check_links(page)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_links_paths_commands_and_labels_exist(page: Path, shipped: Shipped, options: dict[str, set[str]],
                                                    known_labels: set[str], standin: ApiServerStandin) -> None:
    check_links(page)
    with sandbox(standin) as box:  # inline kubectl commands are checked as in a block
        for span in inline_code(page):
            if span.startswith("kubectl ") and "<" not in span:
                for argv in simple_commands(span):
                    check_command(argv, box, shipped, known_labels, f"{page.name}: `{span}`")
    for span in inline_code(page):
        if re.fullmatch(r"(deploy|tests|kvminfo|plugin|nfd-hooks|scripts|bench|soak|docs)/[^\s<>*{}\[\]]*", span):
            assert (REPO / span).exists(), f"{page.name}: `{span}`: no such path"
        words = span.split()
        command = "device-plugin" if words[0] == "kvminfo-device-plugin" else words[1] if (
            words[0] == "kvminfo" and len(words) > 1) else None
        if command in options:
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span):
                assert option in options[command], f"{page.name}: `{span}`: {option} is no option of {command}"
    for label in re.findall(r"kvm-info-[\w.-]*", page.read_text()):
        label = label.rstrip(".")
        if label.endswith("-"):
            assert any(name.startswith(label) for name in known_labels), f"{page.name}: {label}*: no such labels"
        else:
            assert label in known_labels, f"{page.name}: {label}: kvminfo writes no such label"


DEVELOPMENT_ONLY = [
    (r"\bissues? #?\d+", "an issue number"),
    (r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w-])", "a commit hash"),
    (r"\b\d+ (passed|skipped|failed)\b", "a test count"),
    (r"\bthis (2-core |development )?(VM|machine|host)\b", "the development machine"),
]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_has_no_development_log(page: Path) -> None:
    text = page.read_text()
    for pattern, what in DEVELOPMENT_ONLY:
        found = re.search(pattern, text, re.I)
        assert found is None, f"{page.name}: {what}: {found[0]!r} belongs in docs/dev/"


def test_soak_report_writes_its_tables_into_the_soak_page(tmp_path: Path) -> None:
    """`python -m soak.report --readme` (no file) replaces the tables of docs/dev/soak.md."""
    from soak import report

    assert report.SOAK_PAGE == REPO / "docs" / "dev" / "soak.md"
    page = report.SOAK_PAGE.read_text()
    for variant in ("short", "long"):
        assert f"<!-- soak-table:{variant}:start -->" in page and f"<!-- soak-table:{variant}:end -->" in page
    results = {"variant": "short", "finished": "2000-01-01T00:00:00+00:00", "host": {"cpus": 1, "kernel": "k", "python": "p"},
               "scenarios": [{"family": "Labelling", "name": "n", "runs": 1, "held": 1, "latency_of": "n/a",
                              "worst_latency_s": 0.0, "outcome": "passed"}]}
    replaced = report.replace_block(page, report.render_table(results), "short")
    assert "finished 2000-01-01T00:00:00+00:00" in replaced and replaced.count("soak-table:short:start") == 1
