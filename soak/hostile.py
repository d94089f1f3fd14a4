"""Hostile strings and byte-level mutations shared by the fuzz and security modules."""

from __future__ import annotations

from hypothesis import strategies as st

# Strings an attacker-controlled or broken libvirt/config could carry.
HOSTILE_STRINGS: tuple[str, ...] = (
    "", " ", "-", "_", ".", "a", "=", "/", "//", "a=b", "a/b", "x\ny", "\n", "\r\n", "\t",
    "Skylake\nkvm-info-cap-hyperv-evmcs=true",
    "EPYC=Rome", "vendor/../../etc/passwd", "feature.node.kubernetes.io/evil=true",
    "/kvm-info-cap-hyperv-base", "kubernetes.io/x", "A" * 300, "-" * 300, "x" * 62 + "-y", "é" * 80,
    "Ünïcødé-CPU", "\u202eevil", "\u200b", "²", "١٢٣", "9" * 5000, "\x00", "\x1b[31mred", "<b>", "&amp;",
    "${HOME}", "$(reboot)", "'; DROP", "a" * 63, "a" * 64, "Skylake-Client-IBRS", "kvm64",
)

# Where a number is expected: Unicode digits pass str.isdigit() but not always int(); huge ones hit
# Python's 4300-digit conversion limit.
NUMBERISH: tuple[str, ...] = ("²", "١٢٣", "𝟗", "9" * 5000, "-1", "0x10", "1e3", " 42 ", "4_095", "+7", "0", "")

hostile_text = st.one_of(st.sampled_from(NUMBERISH), st.sampled_from(HOSTILE_STRINGS), st.text(max_size=400),
                         st.text(st.characters(codec="ascii"), max_size=120))


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes, max_ops: int = 4) -> bytes:
    """``base`` with a few byte-level edits: truncation, insertion, overwrite, deletion, duplication."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(("truncate", "insert", "overwrite", "delete", "duplicate")))
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16) | st.sampled_from(HOSTILE_STRINGS).map(str.encode))
        elif op == "overwrite" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 256))]
    return bytes(data)
