"""`kvminfo` console script: a thin dispatcher to one module per subcommand.

Subcommand modules are imported only when chosen: `kvminfo labels` (the NFD
hooks) runs where grpc or the kubernetes client are not installed.
Each module provides ``main(argv: list[str], prog: str) -> int``.

Commands that live outside ``kvminfo/`` (the device plugin) register through the
``kvminfo.commands`` entry point group: a module with ``SUMMARY`` and ``main``.
The group is read only for a name that is not built in and for ``--help``.
"""

from __future__ import annotations

import importlib
import sys

from kvminfo.common.argparsing import usage_error
from kvminfo.common.guard import run_guarded

# name -> (module, one-line summary shown by `kvminfo --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": ("kvminfo.commands.probe", "probe this node: each source, each feature, the labels"),
    "labels": ("kvminfo.commands.labels", "print NFD label lines (key=value), one per line, sorted"),
    "features-file": ("kvminfo.commands.features_file", "write an NFD feature file atomically, with expiry; --interval keeps it fresh"),
    "publish": ("kvminfo.commands.publish", "create/update this node's NodeFeature object (nfd.k8s-sigs.io/v1alpha1)"),
}

USAGE = """usage: kvminfo <command> [options]

Make KVM schedulable on Kubernetes: label nodes with their real KVM and
Hyper-V capabilities for Node Feature Discovery, and hand /dev/kvm to
unprivileged pods through a kubelet device plugin.

commands:
{commands}

options:
  -h, --help  show this help and exit
  --version   print kvminfo's version and the commit it was built from, and exit

Run `kvminfo <command> --help` for a command's options and examples.
"""


ENTRY_POINT_GROUP = "kvminfo.commands"


def _registered() -> dict[str, str]:
    """Commands registered by other packages: name -> module (entry point group
    kvminfo.commands, read with importlib.metadata, the standard library's reader
    of installed distributions' entry points; built-in names cannot be replaced)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in COMMANDS}


def _module_for(name: str) -> str | None:
    if name in COMMANDS:
        return COMMANDS[name][0]
    return _registered().get(name)


def _summaries() -> dict[str, str]:
    summaries = {name: summary for name, (_, summary) in COMMANDS.items()}
    for name, module in _registered().items():
        try:
            summaries[name] = importlib.import_module(module).SUMMARY
        except (ImportError, AttributeError) as err:  # a broken install: say so, keep the rest usable
            summaries[name] = f"(unavailable: {err})"
    return summaries


def _usage() -> str:
    summaries = _summaries()
    width = max(len(name) for name in summaries)
    lines = "\n".join(f"  {name:<{width}}  {summary}" for name, summary in summaries.items())
    return USAGE.format(commands=lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = f"kvminfo {argv[0]}" if argv and not argv[0].startswith("-") and argv[0] != "help" else "kvminfo"
    return run_guarded(prog, lambda: _dispatch(argv, prog))


def _dispatch(argv: list[str], prog: str) -> int:
    if not argv:
        print(_usage(), end="", file=sys.stderr)  # a usage error: stdout stays for output
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage(), end="")
        return 0
    if argv[0] == "--version":
        if argv[1:]:
            return usage_error("kvminfo", f"--version takes no arguments, got {' '.join(argv[1:])!r}")
        from kvminfo.common.version import version_line

        print(version_line("kvminfo"))
        return 0
    name, rest = argv[0], argv[1:]
    if name.startswith("-"):  # an option before any command: options belong to a command
        return usage_error("kvminfo", f"{name} needs a command first: kvminfo <command> {name} "
                                      f"(commands: {', '.join(_summaries())})")
    module_name = _module_for(name)
    if module_name is None:
        return usage_error("kvminfo", f"unknown command {name!r}; commands: {', '.join(_summaries())}")
    status: int = importlib.import_module(module_name).main(rest, prog=prog)
    return status


if __name__ == "__main__":
    sys.exit(main())
