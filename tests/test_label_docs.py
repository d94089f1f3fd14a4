"""Issue 9 cases 6 and 10: what the docs and --help say about KubeVirt and NFD matches upstream.

Upstream facts (checked in the sources, see the docs section for each):
KubeVirt >= 0.40's virt-handler owns hyperv.node.kubevirt.io/ (removeLabellerLabels deletes
every label there, then writes its own) and skips nodes annotated
node-labeller.kubevirt.io/skip-node; NFD <= 0.12 drops label namespaces it does not
allow unless nfd-master runs with -extra-label-ns; NFD 0.10-0.13 have no comment or
directive support in feature files (source/local parseFeatures takes every line as a
label); NFD skips a feature file only when Size() > 65536.
"""

from __future__ import annotations

import subprocess

from conftest import KVMINFO, REPO

LABELS_PAGE = (REPO / "docs" / "labels.md").read_text()  # KubeVirt and --kubevirt-names
# the feature file: NFD versions (docs/install.md, "Three ways to feed NFD") and the writer (docs/cli.md)
FEATURE_FILE_PAGES = (REPO / "docs" / "install.md").read_text() + (REPO / "docs" / "cli.md").read_text()


def test_docs_say_who_owns_kubevirts_namespace_and_when_kubevirt_names_fits() -> None:
    for fact in ("KubeVirt >= 0.40", "KubeVirt 0.16 to 0.39", "removeLabellerLabels",
                 "node-labeller.kubevirt.io/skip-node=true", "-extra-label-ns=hyperv.node.kubevirt.io",
                 "**flap**", "remove-on-update", "**Decision: kept, as an explicit mode only"):
        assert fact in LABELS_PAGE, fact


def test_kubevirt_names_help_names_the_conflict() -> None:
    done = subprocess.run([str(KVMINFO), "labels", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "KubeVirt's own node labeller does not run" in " ".join(done.stdout.split())


def test_docs_nfd_feature_file_facts() -> None:
    text = " ".join(FEATURE_FILE_PAGES.split())
    assert "reads it as a comment" not in text  # NFD <= 0.13 has no comments at all
    assert "every `#` line (our header and `# +expiry-time`) is taken as a label name" in text
    assert "A file larger than 65,536 bytes" in text and "64 KiB limit" not in text
    assert "**One-shot runs lapse.**" in text and "--expiry never" in text
