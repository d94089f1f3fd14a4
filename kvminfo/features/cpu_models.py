"""Pure rules: libvirt's CPU models -> the models a node offers and the host model's required features.

A model is offered when libvirt's custom CPU mode marks it ``usable='yes'``
(libvirt: QEMU can run it on this host without dropping features;
``no``/``unknown`` are not offered), it is not marked ``deprecated='yes'``
(libvirt copies QEMU's deprecation flag; QEMU may drop such models; the
corpus shows the attribute in libvirt 9.0's recordings, never in 7.0's),
and it is not on the operator's obsolete list.

KubeVirt's node labeller (pkg/virt-handler/node-labeller, cpu_plugin.go and
node_labeller.go) labels every model whose ``usable`` is neither ``no`` nor
empty (so ``unknown`` counts there, not here), minus the KubeVirt CR's
``obsoleteCPUModels`` (default: DefaultObsoleteCPUModels below); it does not
read ``deprecated``. It also labels ``host-model-required-features.node.kubevirt.io/<f>``
for every ``<feature policy='require'>`` of the host model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# KubeVirt's DefaultObsoleteCPUModels (pkg/virt-handler/node-labeller/util, newest:
# each pre-2010 model and its "-v1" alias, the generic qemu/kvm models, Opteron G1/G2).
# An operator's list replaces it rather than adding to it, as in KubeVirt: the node
# labeller's getSupportedCpuModels falls back to this list only when the cluster
# config's obsoleteCPUModels is nil (HCO's obsoleteCPUs, by contrast, adds to it).
DEFAULT_OBSOLETE_CPU_MODELS: frozenset[str] = frozenset(
    name for base in ("486", "pentium", "pentium2", "pentium3", "pentiumpro", "coreduo", "n270", "core2duo",
                      "Conroe", "athlon", "phenom", "qemu64", "qemu32", "kvm64", "kvm32", "Opteron_G1", "Opteron_G2")
    for name in (base, f"{base}-v1"))


def offered_models(models: Iterable[Mapping[str, Any]] | None,
                   obsolete: frozenset[str] = DEFAULT_OBSOLETE_CPU_MODELS) -> tuple[list[str], dict[str, str]]:
    """(offered model names in libvirt's order, {left-out model: why}) from the ``cpu_models`` fact.

    Only usable models appear in the left-out map (the rest are simply not usable).
    """
    offered, left_out = [], {}
    for model in models or ():
        name = model["name"]
        if model.get("usable") != "yes":
            continue
        if model.get("deprecated"):
            left_out[name] = "deprecated by libvirt"
        elif name in obsolete:
            left_out[name] = "on the obsolete CPU model list"
        else:
            offered.append(name)
    return offered, left_out


def host_model_obsolete(host_model: str | None, obsolete: frozenset[str] = DEFAULT_OBSOLETE_CPU_MODELS) -> bool:
    """KubeVirt marks such a node host-model-is-obsolete and offers no host-model migration target."""
    return host_model is not None and host_model in obsolete


def parse_obsolete_list(text: str) -> frozenset[str]:
    """An operator's obsolete list: names separated by commas, blanks or newlines; '#' starts a comment."""
    names: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        names.extend(part for part in line.replace(",", " ").split() if part)
    return frozenset(names)
