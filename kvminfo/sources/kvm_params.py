"""What the KVM vendor modules say in their bool parameters: nested virtualisation and confidential guests.

``/sys/module/kvm_{intel,amd}/parameters/nested`` (Y/N; 1/0 on older kernels) and

``/sys/module/kvm_amd/parameters/{sev,sev_es,sev_snp}`` and
``/sys/module/kvm_intel/parameters/tdx`` (Linux: arch/x86/kvm/svm/sev.c declares
``sev_enabled``/``sev_es_enabled``/``sev_snp_enabled`` as bool module parameters
named sev, sev_es, sev_snp; sev_snp exists since Linux 6.11, kvm_intel's tdx
since 6.16; kernels before 5.x printed sev as an int, 0/1). The kernel clears a
parameter to N when the hardware or firmware cannot do it, so N is a veto;
an absent file (module not loaded, older kernel) says nothing.

The confidential parameters are read only when a label family that needs them
is asked for.
"""

from __future__ import annotations

import os

SYS_MODULE = "/sys/module"
# label-facing name -> (module, parameter)
CONFIDENTIAL_PARAMS: dict[str, tuple[str, str]] = {
    "sev": ("kvm_amd", "sev"),
    "sev_es": ("kvm_amd", "sev_es"),
    "sev_snp": ("kvm_amd", "sev_snp"),
    "tdx": ("kvm_intel", "tdx"),
}


def parse_bool_param(text: str) -> bool | None:
    """A kernel bool/int module parameter as sysfs prints it: Y/N (bool), 1/0 (int); else None."""
    value = text.strip()
    if value in ("Y", "y", "1"):
        return True
    if value in ("N", "n", "0"):
        return False
    return None


def read_bool_param(path: str) -> bool | None:
    """The bool/int module parameter at ``path`` (parse_bool_param); None when it cannot be read
    (module not loaded, older kernel) or says neither."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return parse_bool_param(f.read(64))
    except OSError:
        return None


def read_confidential_params(sys_module: str | None = None) -> dict[str, bool | None]:
    """{sev, sev_es, sev_snp, tdx}: True/False as the module says, None when it does not say.
    ``sys_module`` defaults to SYS_MODULE (read at call time)."""
    sys_module = SYS_MODULE if sys_module is None else sys_module
    out: dict[str, bool | None] = {}
    for name, (module, param) in CONFIDENTIAL_PARAMS.items():
        out[name] = read_bool_param(os.path.join(sys_module, module, "parameters", param))
    return out
