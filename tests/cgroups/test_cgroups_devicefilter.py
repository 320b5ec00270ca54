"""The eBPF device filter: its instructions run through a small interpreter against a reference
"last matching rule wins, default deny" model, and the kernel's verifier accepts what we generate."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from styrolite.cgroups.bpf import install_device_program, load_device_program
from styrolite.cgroups.devicefilter import device_filter_program, disassemble
from styrolite.cgroups.devices import DEFAULT_ALLOWED_DEVICES, effective_rules, normalized, v1_rule_texts
from styrolite.spec.model import Device, DeviceCgroup
from styrolite.syscalls import constants as k
from styrolite.syscalls.fake import RecordingSyscalls

ACCESS_BITS = {"m": 1, "r": 2, "w": 4}
TYPE_VALUES = {"b": 1, "c": 2}


def run_program(program: bytes, kind: str, major: int, minor: int, access: str) -> int:
    """Interpret the opcodes devicefilter emits, on a ``struct bpf_cgroup_dev_ctx``."""
    ctx = struct.pack("<III", TYPE_VALUES[kind] | (ACCESS_BITS[access] << 16), major, minor)
    regs = [0] * 11
    regs[1] = -1  # the context pointer; only ever used as a load base
    pc, steps = 0, 0
    while True:
        steps += 1
        assert steps < 10_000
        code, reg_byte, off, imm = struct.unpack_from("<BBhi", program, pc * 8)
        dst, src = reg_byte & 0xF, reg_byte >> 4
        pc += 1
        if code == 0x61:  # ldxw dst, [src+off]
            assert regs[src] == -1, "load from something else than the context"
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif code == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0xBC:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == 0xB7:
            regs[dst] = imm
        elif code == 0x55:
            if regs[dst] != imm:
                pc += off
        elif code == 0x5D:
            if regs[dst] != regs[src]:
                pc += off
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def reference(rules: list[DeviceCgroup], kind: str, major: int, minor: int, access: str) -> int:
    verdict = 0
    for rule in (normalized(r) for r in rules):
        if rule.type in ("b", "c") and rule.type != kind:
            continue
        if rule.major is not None and rule.major != major:
            continue
        if rule.minor is not None and rule.minor != minor:
            continue
        if access not in rule.access:
            continue
        verdict = 1 if rule.allow else 0
    return verdict


rule_strategy = st.builds(
    DeviceCgroup,
    allow=st.booleans(),
    type=st.sampled_from([None, "a", "b", "c"]),
    major=st.one_of(st.none(), st.integers(0, 3), st.just(-1)),
    minor=st.one_of(st.none(), st.integers(0, 3)),
    access=st.one_of(st.none(), st.sampled_from(["r", "w", "m", "rw", "rm", "wm", "rwm", "mwr"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(rule_strategy, max_size=6), st.sampled_from(["b", "c"]), st.integers(0, 3), st.integers(0, 3),
       st.sampled_from(["r", "w", "m"]))
def test_program_matches_last_rule_wins_semantics(rules, kind, major, minor, access):
    program = device_filter_program(rules)
    assert run_program(program, kind, major, minor, access) == reference(rules, kind, major, minor, access)


def test_no_rules_denies_everything():
    program = device_filter_program([])
    assert disassemble(program)[-2:] == ["mov r0, 0", "exit"]
    assert run_program(program, "c", 1, 3, "r") == 0


def test_a_catch_all_rule_ends_the_program_without_unreachable_code():
    program = device_filter_program([DeviceCgroup(allow=False, type="c", major=1, minor=3),
                                     DeviceCgroup(allow=True)])
    assert disassemble(program) == [
        "ldxw r2, [r1+0]", "and32 r2, 65535", "ldxw r3, [r1+0]", "rsh32 r3, 16",
        "ldxw r4, [r1+4]", "ldxw r5, [r1+8]", "mov r0, 1", "exit",
    ]


def test_rule_listing_for_one_char_device():
    program = device_filter_program([DeviceCgroup(allow=True, type="c", major=1, minor=3, access="rw")])
    assert disassemble(program)[6:] == [
        "jne r2, 2, +7", "mov32 r1, r3", "and32 r1, 6", "jne r1, r3, +4", "jne r4, 1, +3", "jne r5, 3, +2",
        "mov r0, 1", "exit", "mov r0, 0", "exit",
    ]


def test_effective_rules_deny_first_then_spec_then_defaults():
    spec = [DeviceCgroup(allow=False, type="c", major=1, minor=3)]
    rules = effective_rules(spec)
    assert rules[0] == DeviceCgroup(allow=False, type="a", access="rwm")
    assert rules[1] == DeviceCgroup(allow=False, type="c", major=1, minor=3, access="rwm")
    assert rules[2:] == list(DEFAULT_ALLOWED_DEVICES)
    program = device_filter_program(rules)
    assert run_program(program, "c", 1, 3, "w") == 1  # /dev/null cannot be taken away
    assert run_program(program, "c", 1, 1, "r") == 0
    assert run_program(program, "b", 8, 0, "m") == 1
    assert run_program(program, "b", 8, 0, "r") == 0
    assert run_program(program, "c", 136, 2, "w") == 1


def test_linux_devices_nodes_are_allowed_after_the_spec_rules():
    nodes = [Device(type="c", path="/dev/fuse", major=10, minor=229), Device(type="p", path="/dev/fifo"),
             Device(type="b", path="/dev/sda", major=8, minor=0)]
    rules = effective_rules([DeviceCgroup(allow=False, type="c", major=10, minor=229)], nodes)
    program = device_filter_program(rules)
    assert run_program(program, "c", 10, 229, "w") == 1
    assert run_program(program, "b", 8, 0, "r") == 1
    assert run_program(program, "b", 8, 1, "r") == 0
    assert len(rules) == 2 + 2 + len(DEFAULT_ALLOWED_DEVICES)


def test_v1_rule_texts():
    assert v1_rule_texts(DeviceCgroup(allow=False)) == ["a"]
    assert v1_rule_texts(DeviceCgroup(allow=True, type="c", major=1, minor=3, access="wr")) == ["c 1:3 rw"]
    assert v1_rule_texts(DeviceCgroup(allow=True, type="b", major=-1, minor=None, access="m")) == ["b *:* m"]
    assert v1_rule_texts(DeviceCgroup(allow=True, type="a", major=5, access="r")) == ["b 5:* r", "c 5:* r"]
    with pytest.raises(ValueError, match="type 'x'"):
        normalized(DeviceCgroup(allow=True, type="x"))
    with pytest.raises(ValueError, match="access 'rx'"):
        normalized(DeviceCgroup(allow=True, access="rx"))


def test_load_and_attach_through_the_recording_fake(tmp_path):
    fake = RecordingSyscalls()
    program = device_filter_program(effective_rules([]))
    install_device_program(str(tmp_path), program, fake)
    (load_cmd, load_attr), (attach_cmd, attach_attr) = fake.of("bpf")
    assert load_cmd == k.BPF_PROG_LOAD and attach_cmd == k.BPF_PROG_ATTACH
    prog_type, insn_cnt = struct.unpack_from("<II", load_attr)
    assert (prog_type, insn_cnt) == (k.BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8)
    _dir_fd, prog_fd, attach_type, flags = struct.unpack_from("<IIII", attach_attr)
    assert (prog_fd, attach_type, flags) == (fake.next_fd, k.BPF_CGROUP_DEVICE, 0)


@pytest.mark.root
@pytest.mark.parametrize("rules", [
    [],
    [DeviceCgroup(allow=True)],
    [DeviceCgroup(allow=True, type="c", major=10, minor=200, access="rw"), DeviceCgroup(allow=False, type="b")],
])
def test_the_kernel_verifier_accepts_the_programs(rules):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    fd = load_device_program(device_filter_program(effective_rules(rules)))
    assert fd >= 0
    os.close(fd)
