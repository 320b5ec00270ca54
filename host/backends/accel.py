"""Choose QEMU's accelerator: KVM when /dev/kvm really works, else TCG.

Opening /dev/kvm is not enough: on this kind of machine (a nested, restricted KVM) the VM is created but a
real kernel never runs, and KVM's supported CPUID lacks even SSE3, which every x86-64 CPU since 2004 has.
So KVM counts as usable only if a VM can be created and KVM offers SSE3 (CPUID leaf 1, ECX bit 0).
``ZONE_ACCEL=kvm|tcg`` overrides the probe.
"""

from __future__ import annotations

import fcntl
import os
import struct

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_SUPPORTED_CPUID = 0xC008AE05   # _IOWR(KVMIO, 0x05, struct kvm_cpuid2)
KVM_API_VERSION = 12
CPUID_ENTRY_SIZE = 40                  # struct kvm_cpuid_entry2
CPUID_MAX_ENTRIES = 256
SSE3_BIT = 1 << 0


def kvm_usable(device: str = "/dev/kvm") -> bool:
    try:
        kvm = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(kvm, KVM_GET_API_VERSION) != KVM_API_VERSION:
            return False
        os.close(fcntl.ioctl(kvm, KVM_CREATE_VM, 0))
        buf = bytearray(struct.pack("II", CPUID_MAX_ENTRIES, 0) + bytes(CPUID_ENTRY_SIZE * CPUID_MAX_ENTRIES))
        fcntl.ioctl(kvm, KVM_GET_SUPPORTED_CPUID, buf)
        count = struct.unpack_from("I", buf, 0)[0]
        for i in range(count):
            function, index, _flags, _eax, _ebx, ecx, _edx = struct.unpack_from("7I", buf, 8 + CPUID_ENTRY_SIZE * i)
            if function == 1 and index == 0:
                return bool(ecx & SSE3_BIT)
        return False
    except OSError:
        return False
    finally:
        os.close(kvm)


def choose_accel() -> str:
    forced = os.environ.get("ZONE_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    return "kvm" if kvm_usable() else "tcg"
