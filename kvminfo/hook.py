"""The NFD hooks' entry point: `kvminfo labels`, with a fast path for the hook's own options.

NFD (source.d hooks, NFD <= 0.16) starts nfd-hooks/kvm-caps-info-nfd-plugin as
a fresh process on every node every minute, so its start is the hook's cost.
``main(argv)`` takes exactly what `kvminfo labels` takes. When ``argv`` is the
hook's usual form (``hook_options``: ``--family caps --no-libvirt``, optionally
``--kubevirt-names``, ``--kvm-device PATH``, ``--no-kvm``) it builds the
ProbeOptions itself and runs the same collect() and the same output as
`kvminfo labels`, without importing argparse, logging or dataclasses
(kvminfo.probe_options, kvminfo.lazylog and kvminfo.record are what let the
modules on this path do without them). Anything else
(``-h``, ``-v``, another family, libvirt, an abbreviation, ``--opt=value``
forms it does not know) goes to the full CLI, kvminfo.cli, unchanged, so
every error message and every option stays argparse's.

tests/test_hook_entry.py checks both paths give the same options, labels,
messages and exit status; bench/bench_hook.py measures the start.
"""

from __future__ import annotations

from kvminfo.probe_options import DEFAULT_KVM_PATH, ProbeOptions, options_for_families

PROG = "kvminfo labels"  # the messages name the command the hook stands for, as the full CLI does
_FLAGS = ("--no-libvirt", "--no-kvm", "--kubevirt-names")


def hook_options(argv: list[str]) -> ProbeOptions | None:
    """The ProbeOptions `kvminfo labels argv` would probe with, or None when ``argv`` is not
    the hook's fast form (then only the full CLI may read it). Pure.

    Fast form: ``--family caps`` (or ``--family=caps``, repeatable) and ``--no-libvirt``,
    with any of ``--no-kvm``, ``--kubevirt-names``, ``--kvm-device PATH`` /
    ``--kvm-device=PATH`` (a PATH that is not empty and does not start with '-', which
    argparse would read differently). Every other word makes it None.
    """
    seen: set[str] = set()
    families: set[str] = set()
    kvm_path = DEFAULT_KVM_PATH
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if name in ("--family", "--kvm-device"):
            if not eq:
                value = next(words, "")
            if not value or value.startswith("-"):
                return None
            if name == "--family":
                families.add(value)
            else:
                kvm_path = value
        elif word in _FLAGS:
            seen.add(word)
        else:
            return None
    if families != {"caps"} or "--no-libvirt" not in seen:
        return None
    options = ProbeOptions(kvm_path=kvm_path, use_kvm="--no-kvm" not in seen, use_libvirt=False,
                           kubevirt_names="--kubevirt-names" in seen, families=("caps",))
    return options_for_families(options)


def _print_labels(options: ProbeOptions) -> int:
    from kvminfo.collect import collect
    from kvminfo.output.base import StdoutLines

    StdoutLines().write(collect(options))
    return 0


def main(argv: list[str]) -> int:
    """Exit status of `kvminfo labels argv` (fast path when hook_options accepts ``argv``)."""
    options = hook_options(argv)
    if options is None:
        from kvminfo.cli import main as full_cli

        return full_cli(["labels", *argv])
    from kvminfo.cli import run_guarded

    return run_guarded(PROG, lambda: _print_labels(options))
