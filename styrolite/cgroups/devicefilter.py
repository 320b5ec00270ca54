"""Device rules -> an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE (cgroup v2 has no devices files).

The kernel runs the program on every open/mknod of a device node by a process in the cgroup, with
``struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`` in R1 (access_type: device type in
the low 16 bits, access bit in the high 16). It returns 1 (allow) or 0 (deny).

The program checks the rules from the LAST to the first and returns at the first match, which gives "the
last matching rule wins" (runc's semantics); nothing matching means deny. A rule that matches everything
ends the program: the earlier rules are unreachable and the verifier rejects unreachable code.
"""

from __future__ import annotations

import struct

from styrolite.cgroups.devices import normalized
from styrolite.records import record
from styrolite.spec.model import DeviceCgroup
from styrolite.syscalls import constants as k

# Instruction classes, sizes, modes, operations (include/uapi/linux/bpf_common.h, bpf.h)
BPF_LDX, BPF_ALU, BPF_JMP, BPF_ALU64 = 0x01, 0x04, 0x05, 0x07
BPF_W, BPF_MEM = 0x00, 0x60
BPF_K, BPF_X = 0x00, 0x08
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0
BPF_JNE, BPF_EXIT = 0x50, 0x90

R0, R1, R2, R3, R4, R5 = range(6)
_TYPE, _ACCESS, _MAJOR, _MINOR = R2, R3, R4, R5

_ACCESS_BITS = {"m": k.BPF_DEVCG_ACC_MKNOD, "r": k.BPF_DEVCG_ACC_READ, "w": k.BPF_DEVCG_ACC_WRITE}
_TYPE_VALUES = {"b": k.BPF_DEVCG_DEV_BLOCK, "c": k.BPF_DEVCG_DEV_CHAR}


@record
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    jump_to: str | None = None
    """A label; the assembler turns it into ``off``."""

    def encode(self) -> bytes:
        return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)


class Assembler:
    """Just enough of an eBPF assembler for the device filter: loads, 32-bit ALU, conditional jumps, exit."""

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.labels: dict[str, int] = {}

    def load_u32(self, dst: int, base: int, offset: int) -> None:
        self.insns.append(Insn(BPF_LDX | BPF_W | BPF_MEM, dst, base, offset))

    def alu32_imm(self, op: int, dst: int, imm: int) -> None:
        self.insns.append(Insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm))

    def mov32_reg(self, dst: int, src: int) -> None:
        self.insns.append(Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src))

    def mov64_imm(self, dst: int, imm: int) -> None:
        self.insns.append(Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm))

    def jne_imm(self, dst: int, imm: int, label: str) -> None:
        self.insns.append(Insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, 0, imm, jump_to=label))

    def jne_reg(self, dst: int, src: int, label: str) -> None:
        self.insns.append(Insn(BPF_JMP | BPF_JNE | BPF_X, dst, src, jump_to=label))

    def exit(self) -> None:
        self.insns.append(Insn(BPF_JMP | BPF_EXIT))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def assemble(self) -> bytes:
        for index, insn in enumerate(self.insns):
            if insn.jump_to is not None:
                insn.off = self.labels[insn.jump_to] - (index + 1)
        return b"".join(insn.encode() for insn in self.insns)


def _emit_rule(asm: Assembler, rule: DeviceCgroup, next_label: str) -> bool:
    """Code for one rule; returns True when the rule matches every access (nothing after it can run)."""
    matches_all = True
    if rule.type in _TYPE_VALUES:
        asm.jne_imm(_TYPE, _TYPE_VALUES[rule.type], next_label)
        matches_all = False
    access = sum(_ACCESS_BITS[c] for c in rule.access or "rwm")
    if access != sum(_ACCESS_BITS.values()):
        # The requested access must be a subset of the rule's: (access & rule) == access.
        asm.mov32_reg(R1, _ACCESS)
        asm.alu32_imm(BPF_AND, R1, access)
        asm.jne_reg(R1, _ACCESS, next_label)
        matches_all = False
    if rule.major is not None:
        asm.jne_imm(_MAJOR, rule.major, next_label)
        matches_all = False
    if rule.minor is not None:
        asm.jne_imm(_MINOR, rule.minor, next_label)
        matches_all = False
    asm.mov64_imm(R0, 1 if rule.allow else 0)
    asm.exit()
    return matches_all


def device_filter_program(rules: list[DeviceCgroup]) -> bytes:
    """The program's instructions (8 bytes each) for ``rules`` in spec order."""
    asm = Assembler()
    asm.load_u32(_TYPE, R1, 0)
    asm.alu32_imm(BPF_AND, _TYPE, 0xFFFF)
    asm.load_u32(_ACCESS, R1, 0)
    asm.alu32_imm(BPF_RSH, _ACCESS, 16)
    asm.load_u32(_MAJOR, R1, 4)
    asm.load_u32(_MINOR, R1, 8)
    for index, rule in enumerate(reversed([normalized(r) for r in rules])):
        label = f"rule{index + 1}"
        if _emit_rule(asm, rule, label):
            return asm.assemble()
        asm.label(label)
    asm.mov64_imm(R0, 0)  # default deny
    asm.exit()
    return asm.assemble()


def disassemble(program: bytes) -> list[str]:
    """A readable listing, for tests and debugging (only the opcodes this module emits)."""
    names = {
        BPF_LDX | BPF_W | BPF_MEM: "ldxw", BPF_ALU | BPF_AND | BPF_K: "and32", BPF_ALU | BPF_RSH | BPF_K: "rsh32",
        BPF_ALU | BPF_MOV | BPF_X: "mov32", BPF_ALU64 | BPF_MOV | BPF_K: "mov", BPF_JMP | BPF_JNE | BPF_K: "jne",
        BPF_JMP | BPF_JNE | BPF_X: "jne", BPF_JMP | BPF_EXIT: "exit",
    }
    lines = []
    for offset in range(0, len(program), 8):
        code, regs, off, imm = struct.unpack_from("<BBhi", program, offset)
        dst, src = regs & 0xF, regs >> 4
        name = names.get(code, f"op{code:#x}")
        if name == "ldxw":
            lines.append(f"ldxw r{dst}, [r{src}{off:+d}]")
        elif name == "exit":
            lines.append("exit")
        elif name == "jne":
            operand = f"r{src}" if code & BPF_X else str(imm)
            lines.append(f"jne r{dst}, {operand}, {off:+d}")
        elif code & BPF_X:
            lines.append(f"{name} r{dst}, r{src}")
        else:
            lines.append(f"{name} r{dst}, {imm}")
    return lines
