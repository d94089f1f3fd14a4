"""The import arrows run one way: kvminfo_plugin may use kvminfo's core, kvminfo never imports the plugin.

Read from the source with ast (not by importing), so a lazy import inside a
function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imports(package_dir: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


def test_kvminfo_never_imports_the_plugin():
    offenders = {path: sorted(n for n in names if n.split(".")[0] == "kvminfo_plugin")
                 for path, names in _imports(REPO / "kvminfo").items()}
    assert {p: n for p, n in offenders.items() if n} == {}


def test_every_package_folder_carries_its_package_name():
    # plugin/ is the user's layout; the package inside it is named like its folder.
    assert (REPO / "plugin" / "kvminfo_plugin" / "__init__.py").is_file()
    assert not (REPO / "plugin" / "__init__.py").exists()
    assert (REPO / "kvminfo" / "__init__.py").is_file()
