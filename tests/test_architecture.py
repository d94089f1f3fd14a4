"""The import arrows run one way: kvminfo_plugin may use kvminfo's core, kvminfo never imports the plugin.

Read from the source with ast (not by importing), so a lazy import inside a
function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imported(path: Path, members: bool = False) -> set[str]:
    """The absolute module names ``path`` imports, at the top or inside a function; with
    ``members`` also each ``from M import x`` as "M.x" (x may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if members:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imports(package_dir: Path) -> dict[str, set[str]]:
    return {str(path.relative_to(REPO)): _imported(path) for path in package_dir.rglob("*.py")}


def test_kvminfo_never_imports_the_plugin():
    offenders = {path: sorted(n for n in names if n.split(".")[0] == "kvminfo_plugin")
                 for path, names in _imports(REPO / "kvminfo").items()}
    assert {p: n for p, n in offenders.items() if n} == {}


def test_every_package_folder_carries_its_package_name():
    # plugin/ is the user's layout; the package inside it is named like its folder.
    assert (REPO / "plugin" / "kvminfo_plugin" / "__init__.py").is_file()
    assert not (REPO / "plugin" / "__init__.py").exists()
    assert (REPO / "kvminfo" / "__init__.py").is_file()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _kvminfo_graph() -> dict[str, set[str]]:
    """kvminfo module -> the kvminfo modules it imports (at the top or lazily inside a function)."""
    modules = {_module_name(p): p for p in (REPO / "kvminfo").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = _imported(path, members=True)
        graph[name] = {e for e in edges if e in modules and e != name and not modules[e].name == "__init__.py"}
    return graph


def test_no_import_circle_in_kvminfo():
    graph, cycles = _kvminfo_graph(), []

    def visit(module: str, path: tuple[str, ...]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(path[path.index(target):] + (target,))
            elif target not in done:
                visit(target, path + (target,))
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, (module,))
    assert cycles == []


def test_commands_never_import_each_other_sideways():
    graph = _kvminfo_graph()
    sideways = {name: sorted(t for t in targets if t.startswith("kvminfo.commands."))
                for name, targets in graph.items() if name.startswith("kvminfo.commands.")}
    assert {n: t for n, t in sideways.items() if t} == {}


def test_rules_and_renderers_never_import_a_sources_io_module():
    """Pure layers read typed facts (kvminfo.sources.*facts), never the modules that do the I/O."""
    graph = _kvminfo_graph()
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
