"""`kvminfo` console script: a thin dispatcher to one module per subcommand.

Subcommand modules are imported only when chosen, so the NFD hook path
(`kvminfo labels --no-libvirt`) never pays for grpc, kubernetes or libvirt.
Each module provides ``main(argv: list[str], prog: str) -> int``.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line summary shown by `kvminfo --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": ("kvminfo.commands.probe", "probe this node: each source, each feature, the labels"),
    "labels": ("kvminfo.commands.labels", "print NFD label lines (key=value), one per line, sorted"),
    "features-file": ("kvminfo.commands.features_file", "write an NFD feature file atomically, with expiry; --interval keeps it fresh"),
    "device-plugin": ("kvminfo.commands.device_plugin", "serve /dev/kvm (and other char devices) to the kubelet over device plugin API v1beta1"),
    "publish": ("kvminfo.commands.publish", "create/update this node's NodeFeature object (nfd.k8s-sigs.io/v1alpha1)"),
}

USAGE = """usage: kvminfo <command> [options]

Make KVM schedulable on Kubernetes: label nodes with their real KVM and
Hyper-V capabilities for Node Feature Discovery, and hand /dev/kvm to
unprivileged pods through a kubelet device plugin.

commands:
{commands}

Run `kvminfo <command> --help` for a command's options.
"""


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return USAGE.format(commands=lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(_usage(), end="", file=sys.stderr)  # a usage error: stdout stays for output
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage(), end="")
        return 0
    if argv[0] == "--version":
        from kvminfo import __version__

        print(f"kvminfo {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kvminfo: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    from kvminfo.errors import KvminfoError

    try:
        return module.main(rest, prog=f"kvminfo {name}")
    except KvminfoError as err:
        print(f"kvminfo {name}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
