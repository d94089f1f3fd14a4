"""A VM in a few bytes: create a KVM guest, run it, check what it did.

The smallest real use of /dev/kvm a pod can make without QEMU or a disk
image: one vCPU in 16-bit real mode at guest address 0x1000 runs

    mov al, 0x2a ; out 0x10, al ; hlt

and the host checks that the guest wrote 0x2a to I/O port 0x10 (a
KVM_EXIT_IO) and then halted (KVM_EXIT_HLT). Exit 0 and one line on
success; one line on stderr and exit 1 otherwise.

Environment: KVM_DEVICE (default /dev/kvm).
Upstream: the KVM API document (Documentation/virt/kvm/api.rst) for the
ioctls and struct layouts (x86-64, checked against linux/kvm.h of Debian 12):
kvm_userspace_memory_region 32 bytes, kvm_regs 144, kvm_sregs 312 (cs is its
first kvm_segment: base u64 at 0, selector u16 at 12), kvm_run's exit_reason
u32 at 8 and, for KVM_EXIT_IO, direction/size/port/count/data_offset at 32.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
import sys

KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE = 0xAE00, 0xAE01, 0xAE04
KVM_CREATE_VCPU, KVM_RUN = 0xAE41, 0xAE80
KVM_SET_USER_MEMORY_REGION = 0x4020AE46  # _IOW(KVMIO, 0x46, 32 bytes)
KVM_GET_REGS, KVM_SET_REGS = 0x8090AE81, 0x4090AE82  # struct kvm_regs, 144 bytes
KVM_GET_SREGS, KVM_SET_SREGS = 0x8138AE83, 0x4138AE84  # struct kvm_sregs, 312 bytes
KVM_EXIT_IO, KVM_EXIT_HLT = 2, 5
GUEST_CODE = bytes([0xB0, 0x2A, 0xE6, 0x10, 0xF4])  # mov al,0x2a; out 0x10,al; hlt
GUEST_ADDR, MEM_SIZE, PORT, VALUE = 0x1000, 0x10000, 0x10, 0x2A


def run_guest(device: str) -> str:
    kvm = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        if fcntl.ioctl(kvm, KVM_GET_API_VERSION) != 12:
            raise RuntimeError("KVM API version is not 12")
        vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        memory = mmap.mmap(-1, MEM_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory[GUEST_ADDR:GUEST_ADDR + len(GUEST_CODE)] = GUEST_CODE
        host_addr = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("=IIQQQ", 0, 0, 0, MEM_SIZE, host_addr))
        vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
        run = mmap.mmap(vcpu, fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE), mmap.MAP_SHARED,
                        mmap.PROT_READ | mmap.PROT_WRITE)
        sregs = bytearray(fcntl.ioctl(vcpu, KVM_GET_SREGS, bytes(312)))
        struct.pack_into("=Q", sregs, 0, 0)   # cs.base = 0
        struct.pack_into("=H", sregs, 12, 0)  # cs.selector = 0
        fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
        regs = bytearray(144)
        struct.pack_into("=QQ", regs, 128, GUEST_ADDR, 0x2)  # rip, rflags (bit 1 is always set)
        fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
        seen = []
        for _ in range(4):
            fcntl.ioctl(vcpu, KVM_RUN, 0)
            (reason,) = struct.unpack_from("=I", run, 8)
            if reason == KVM_EXIT_IO:
                direction, size, port, count, offset = struct.unpack_from("=BBHIQ", run, 32)
                seen.append(f"out {port:#x} {run[offset]:#x}" if direction == 1 else f"in {port:#x}")
            elif reason == KVM_EXIT_HLT:
                if seen != [f"out {PORT:#x} {VALUE:#x}"]:
                    raise RuntimeError(f"guest halted after {seen}, expected one out {PORT:#x} {VALUE:#x}")
                return f"guest wrote {VALUE:#x} to port {PORT:#x} and halted"
            else:
                raise RuntimeError(f"unexpected exit reason {reason} after {seen}")
        raise RuntimeError(f"guest did not halt after {seen}")
    finally:
        os.close(kvm)


def main() -> int:
    device = os.environ.get("KVM_DEVICE", "/dev/kvm")
    try:
        print(f"kvm-vm-example: {run_guest(device)} ({device})")
    except (OSError, RuntimeError) as err:
        print(f"kvm-vm-example: {device}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
