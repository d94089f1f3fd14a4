"""The layout by role and the direction of every import arrow, for both packages.

kvminfo/ (the labeller):
  cli, collect, model     the only loose modules (with __init__ and __main__)
  commands/               the CLI: one module per subcommand (kvminfo.cli.COMMANDS) and the
                          options they share (commands/options.py)
  sources/                I/O: each source probes and returns typed facts
  features/               pure rules: facts -> verdicts
  labels/                 pure renderers: verdicts and facts -> NFD labels
  output/                 the writers: stdout, NFD feature file, NodeFeature object
  common/                 generic helpers both packages use; imports nothing else of kvminfo
plugin/kvminfo_plugin/ (the device plugin) reaches kvminfo only through kvminfo.common, and
kvminfo never imports the plugin. Neither package has an import circle.

Read from the source with ast (not by importing), so a lazy import inside a function and one
under ``if TYPE_CHECKING:`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# package name -> the folder that holds it
PACKAGES = {"kvminfo": REPO / "kvminfo", "kvminfo_plugin": REPO / "plugin" / "kvminfo_plugin",
            "kvminfo_dra": REPO / "plugin" / "kvminfo_dra"}
LOOSE_MODULES = {"__init__", "__main__", "cli", "collect", "model"}
ROLE_FOLDERS = {"commands", "common", "features", "labels", "output", "sources"}


def _imported(path: Path, members: bool = False) -> set[str]:
    """The absolute module names ``path`` imports, at the top or inside a function; with
    ``members`` also each ``from M import x`` as "M.x" (x may be a submodule). A relative
    import is resolved against the module's own package."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            if members:
                names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _module_name(path: Path) -> str:
    for package, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(f"{path} is in neither package")


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGES[package].rglob("*.py"))}


def _graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (at the top, lazily, or for typing).
    An edge to a package's __init__ is left out: ``from pkg import mod`` names the module itself."""
    modules = _modules(package)
    return {name: {e for e in _imported(path, members=True)
                   if e in modules and e != name and modules[e].name != "__init__.py"}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Every import circle a depth-first walk meets, each as the path that closes it."""
    cycles: list[tuple[str, ...]] = []
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(path[path.index(target):] + (target,))
            elif target not in done:
                visit(target, path + (target,))
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, (module,))
    return cycles


def test_the_circle_check_finds_a_circle():
    """The check itself: a -> b -> c -> a is found; a one-way chain is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [("a", "b", "c", "a")]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circle_in_kvminfo():
    assert _cycles(_graph("kvminfo")) == []


def test_no_import_circle_in_the_plugin():
    assert _cycles(_graph("kvminfo_plugin")) == []


def test_no_import_circle_in_the_dra_driver():
    assert _cycles(_graph("kvminfo_dra")) == []


def test_the_dra_driver_reaches_the_other_packages_only_through_upstream():
    """One adapter module (kvminfo_dra/upstream.py) names what the driver takes from kvminfo and the
    device plugin, so a move there is one file to follow."""
    offenders = {name: sorted(n for n in _imported(path) if n.split(".")[0] in ("kvminfo", "kvminfo_plugin"))
                 for name, path in _modules("kvminfo_dra").items() if name != "kvminfo_dra.upstream"}
    assert {p: n for p, n in offenders.items() if n} == {}


def test_neither_other_package_imports_the_dra_driver():
    offenders = {name: sorted(n for n in _imported(path) if n.split(".")[0] == "kvminfo_dra")
                 for package in ("kvminfo", "kvminfo_plugin") for name, path in _modules(package).items()}
    assert {p: n for p, n in offenders.items() if n} == {}


def test_kvminfo_never_imports_the_plugin():
    offenders = {name: sorted(n for n in _imported(path) if n.split(".")[0] == "kvminfo_plugin")
                 for name, path in _modules("kvminfo").items()}
    assert {p: n for p, n in offenders.items() if n} == {}


def test_the_plugin_reaches_kvminfo_only_through_common():
    offenders = {name: sorted(n for n in _imported(path) if n.split(".")[0] == "kvminfo"
                              and n != "kvminfo" and not n.startswith("kvminfo.common"))
                 for name, path in _modules("kvminfo_plugin").items()}
    assert {p: n for p, n in offenders.items() if n} == {}


def test_common_imports_nothing_else_of_kvminfo():
    graph = _graph("kvminfo")
    offenders = {n: sorted(t for t in targets if not t.startswith("kvminfo.common."))
                 for n, targets in graph.items() if n.startswith("kvminfo.common.")}
    assert {n: t for n, t in offenders.items() if t} == {}


def test_every_package_folder_carries_its_package_name():
    # plugin/ is the user's layout; the package inside it is named like its folder.
    assert (REPO / "plugin" / "kvminfo_plugin" / "__init__.py").is_file()
    assert not (REPO / "plugin" / "__init__.py").exists()
    assert (REPO / "kvminfo" / "__init__.py").is_file()


def test_kvminfo_has_few_loose_modules_and_folders_by_role():
    top = REPO / "kvminfo"
    loose = {p.stem for p in top.glob("*.py")}
    folders = {p.name for p in top.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert loose == LOOSE_MODULES
    assert folders == ROLE_FOLDERS
    assert all((top / folder / "__init__.py").is_file() for folder in folders)


def test_commands_never_import_each_other_sideways():
    """A subcommand module may use the CLI's shared helpers (commands/options.py), never another command."""
    from kvminfo.cli import COMMANDS

    commands = {module for module, _ in COMMANDS.values()}
    assert commands <= set(_modules("kvminfo"))  # each named module exists
    graph = _graph("kvminfo")
    sideways = {name: sorted(graph[name] & (commands - {name})) for name in commands}
    assert {n: t for n, t in sideways.items() if t} == {}
    assert not {n for n in graph if n.startswith("kvminfo.commands.")} - commands - {"kvminfo.commands.options"}


def test_rules_and_renderers_never_import_a_sources_io_module():
    """Pure layers read typed facts (kvminfo.sources.*facts), never the modules that do the I/O."""
    graph = _graph("kvminfo")
    pure = [n for n in graph if n.startswith(("kvminfo.features.", "kvminfo.labels."))]
    pure += ["kvminfo.output.nodefeature", "kvminfo.output.featurefile", "kvminfo.model", "kvminfo.sources.facts",
             "kvminfo.sources.libvirt_facts", "kvminfo.sources.whitelist_facts"]
    allowed = {"kvminfo.sources.facts", "kvminfo.sources.libvirt_facts", "kvminfo.sources.whitelist_facts"}
    offenders = {n: sorted(t for t in graph[n] if t.startswith("kvminfo.sources.") and t not in allowed) for n in pure}
    assert {n: t for n, t in offenders.items() if t} == {}


def test_source_names_are_spelt_once():
    """A source's name is a constant of kvminfo/sources/facts.py; nowhere else in kvminfo/ is it a
    bare string (docstrings aside). libvirt's virt type "kvm" is libvirt's word, not our source's."""
    from kvminfo.sources.registry import SOURCES

    names = {entry.name for entry in SOURCES}
    allowed = {("kvminfo/sources/libvirt.py", "kvm")}  # getDomainCapabilities(..., virttype="kvm")
    offenders = []
    for path in sorted((REPO / "kvminfo").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel == "kvminfo/sources/facts.py":
            continue
        tree = ast.parse(path.read_text(), rel)
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        offenders += [f"{rel}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
                      and (rel, node.value) not in allowed]
    assert offenders == []
