"""Pure rules: libvirt's domain capabilities + the KVM modules' parameters -> confidential-guest verdicts.

Names: sev, sev-es, sev-snp, tdx, sgx. A verdict is SUPPORTED only when
libvirt says so (``supported='yes'`` or a launchSecurity sectype) and the
kernel, where it tells (kvm_amd ``sev``/``sev_es``/``sev_snp``, kvm_intel
``tdx`` parameters), does not say N. UNKNOWN when the libvirt that answered
cannot express the feature (element absent: too old), so "no label" never
claims more than libvirt said.

Rules and their sources:
- sev: ``<sev supported='yes'>`` (libvirt >= 4.5); KubeVirt's kubevirt.io/sev is the same test.
- sev-es: SEV and ``<maxESGuests>`` > 0 (libvirt >= 8.0 reports it). KubeVirt's
  node labeller (cpu_plugin.go getDomCapabilities) sets kubevirt.io/sev-es by this
  same rule. libvirt has no separate sectype for SEV-ES (it is an SEV policy bit).
- sev-snp: SEV-ES (above: SEV and ``<maxESGuests>`` > 0; SNP guests use SEV-ES address-space
  IDs) and ``<launchSecurity supported='yes'>`` listing sectype ``sev-snp`` (libvirt >= 10.5;
  older libvirt cannot say, so UNKNOWN). KubeVirt's node labeller (cpu_plugin.go
  getDomCapabilities) sets kubevirt.io/sev-snp by exactly this rule.
- tdx: ``<tdx supported='yes'>`` only (libvirt >= 11.6), as KubeVirt's TDX label
  (node_labeller.go: n.TDX.Supported == "yes"). The sectype ``tdx`` of libvirt 10.5-11.5
  says what QEMU can express, not that this host can start a TDX guest: alone it is UNKNOWN.
- sgx: ``<sgx supported='yes'>`` (libvirt >= 8.10); the EPC size is reported separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kvminfo.features.family_facts import Verdict
from kvminfo.model import Support

if TYPE_CHECKING:
    from typing import Any

NAMES: tuple[str, ...] = ("sev", "sev-es", "sev-snp", "tdx", "sgx")


def _kernel_veto(name: str, module: str, param: str, params: Mapping[str, bool | None],
                 libvirt_reason: str) -> Verdict:
    said = params.get(param.replace("-", "_"))
    if said is False:
        return Verdict(name, Support.UNSUPPORTED, f"{libvirt_reason}, but {module} {param}=N")
    kernel = f"; {module} {param}=Y" if said else ""
    return Verdict(name, Support.SUPPORTED, libvirt_reason + kernel)


def sev_verdict(conf: Mapping[str, Any], params: Mapping[str, bool | None]) -> Verdict:
    sev = conf.get("sev")
    if sev is None or sev.get("supported") is None:
        return Verdict("sev", Support.UNKNOWN, "libvirt has no <sev> element")
    if not sev["supported"]:
        return Verdict("sev", Support.UNSUPPORTED, "libvirt: <sev supported='no'>")
    return _kernel_veto("sev", "kvm_amd", "sev", params, "libvirt: <sev supported='yes'>")


def sev_es_verdict(conf: Mapping[str, Any], params: Mapping[str, bool | None]) -> Verdict:
    sev = sev_verdict(conf, params)
    if sev.support is not Support.SUPPORTED:
        return Verdict("sev-es", sev.support, f"needs SEV ({sev.reason})")
    max_es = conf["sev"].get("max_es_guests")
    if max_es is None:
        return Verdict("sev-es", Support.UNKNOWN, "libvirt does not report <maxESGuests> (libvirt < 8.0)")
    if max_es <= 0:
        return Verdict("sev-es", Support.UNSUPPORTED, "libvirt: <maxESGuests>0</maxESGuests>")
    return _kernel_veto("sev-es", "kvm_amd", "sev_es", params, f"libvirt: maxESGuests {max_es}")


def sev_snp_verdict(conf: Mapping[str, Any], params: Mapping[str, bool | None]) -> Verdict:
    sectypes = conf.get("launch_security")
    if sectypes is None:
        return Verdict("sev-snp", Support.UNKNOWN, "libvirt has no <launchSecurity> element (libvirt < 10.5)")
    if "sev-snp" not in sectypes:
        return Verdict("sev-snp", Support.UNSUPPORTED, "libvirt: <launchSecurity> lists no sev-snp")
    es = sev_es_verdict(conf, params)
    if es.support is not Support.SUPPORTED:
        # libvirt's elements disagree: the sectype says SNP, the SEV element says no SEV-ES.
        return Verdict("sev-snp", es.support, f"libvirt lists sectype sev-snp, but SNP needs SEV-ES ({es.reason})")
    return _kernel_veto("sev-snp", "kvm_amd", "sev_snp", params,
                        f"libvirt: <launchSecurity> sectype sev-snp, SEV-ES ({es.reason})")


def tdx_verdict(conf: Mapping[str, Any], params: Mapping[str, bool | None]) -> Verdict:
    tdx, sectypes = conf.get("tdx"), conf.get("launch_security")
    listed = bool(sectypes and "tdx" in sectypes)
    if tdx is False:
        return Verdict("tdx", Support.UNSUPPORTED, "libvirt: <tdx supported='no'>"
                       + (" (its <launchSecurity> lists sectype tdx: QEMU could, this host cannot)" if listed else ""))
    if tdx:
        return _kernel_veto("tdx", "kvm_intel", "tdx", params, "libvirt: <tdx supported='yes'>")
    if listed:
        return Verdict("tdx", Support.UNKNOWN, "libvirt lists sectype tdx but has no <tdx> element (libvirt < 11.6): "
                       "whether this host can start a TDX guest is not said")
    if sectypes is not None:
        return Verdict("tdx", Support.UNSUPPORTED, "libvirt: <launchSecurity> lists no tdx")
    return Verdict("tdx", Support.UNKNOWN, "libvirt has neither <tdx> nor <launchSecurity> (libvirt < 10.5)")


def sgx_verdict(conf: Mapping[str, Any]) -> Verdict:
    sgx = conf.get("sgx")
    if sgx is None or sgx.get("supported") is None:
        return Verdict("sgx", Support.UNKNOWN, "libvirt has no <sgx> element (libvirt < 8.10)")
    if not sgx["supported"]:
        return Verdict("sgx", Support.UNSUPPORTED, "libvirt: <sgx supported='no'>")
    return Verdict("sgx", Support.SUPPORTED, "libvirt: <sgx supported='yes'>")


def confidential_verdicts(conf: Mapping[str, Any] | None,
                          params: Mapping[str, bool | None] | None = None) -> tuple[Verdict, ...]:
    """One verdict per name in NAMES from the ``confidential`` libvirt fact and the module parameters.

    ``conf`` None (libvirt not asked or not answering) makes every verdict UNKNOWN.
    """
    if conf is None:
        return tuple(Verdict(name, Support.UNKNOWN, "libvirt not asked or not answering") for name in NAMES)
    params = params or {}
    return (sev_verdict(conf, params), sev_es_verdict(conf, params), sev_snp_verdict(conf, params),
            tdx_verdict(conf, params), sgx_verdict(conf))
