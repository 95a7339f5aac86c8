"""What a process's seccomp filters answer to getrandom(): a classic-BPF evaluator (PURE).

doctor said `✓ getrandom() usable` for a daemon whose filter denied it, because the call was
made in jailshim's own probe (issue 23). A daemon's filters (read by daemon_entropy.py through
PTRACE_SECCOMP_GET_FILTER) are run here on the seccomp_data of a getrandom() call, the way the
kernel does (kernel/seccomp.c): every filter runs, the most severe action wins. A filter whose
answer depends on what jailshim cannot know (the buffer's address, the instruction pointer) is
"cannot tell", found by running it on two different guesses.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence

from jailshim.verify.verdict import Getrandom

__all__ = ["GETRANDOM_NR", "BpfError", "getrandom_answer", "run_filter", "seccomp_status"]

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
# (machine from uname) -> (getrandom's number, AUDIT_ARCH_*)
GETRANDOM_NR = {"x86_64": (318, AUDIT_ARCH_X86_64), "aarch64": (278, AUDIT_ARCH_AARCH64)}

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
_ACTION = 0xFFFF0000
_DATA = 0x0000FFFF
_MEMWORDS = 16
_MAX_STEPS = 4096  # BPF_MAXINSNS: a filter is a DAG, so no run is longer than the program


class BpfError(ValueError):
    """The program is not one the kernel would have accepted."""


def seccomp_status(status_text: str) -> tuple[int, int]:
    """(Seccomp mode, Seccomp_filters) from /proc/PID/status; (0, 0) when absent."""
    mode = filters = 0
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key == "Seccomp" and value.strip().isdigit():
            mode = int(value)
        elif key == "Seccomp_filters" and value.strip().isdigit():
            filters = int(value)
    return mode, filters


def _data(nr: int, arch: int, ip: int, args: Sequence[int]) -> bytes:
    """struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]."""
    return struct.pack("=iIQ6Q", nr, arch, ip, *args)


def run_filter(program: bytes, data: bytes) -> int:
    """The 32-bit value a seccomp cBPF ``program`` returns for ``data`` (struct sock_filter
    records of 8 bytes: u16 code, u8 jt, u8 jf, u32 k)."""
    if not program or len(program) % 8:
        raise BpfError("a filter is a whole number of 8-byte instructions")
    insns = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    a = x = 0
    mem = [0] * _MEMWORDS
    pc = 0
    for _ in range(_MAX_STEPS):
        if pc >= len(insns):
            raise BpfError("the program runs past its end")
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            mode = code & 0xE0
            if mode == 0x20:  # BPF_ABS (BPF_W only in seccomp)
                if k % 4 or k + 4 > len(data):
                    raise BpfError(f"a load at offset {k} is outside seccomp_data")
                a = struct.unpack_from("=I", data, k)[0]
            elif mode == 0x00:  # BPF_IMM
                a = k
            elif mode == 0x60:  # BPF_MEM
                a = mem[k % _MEMWORDS]
            elif mode == 0x80:  # BPF_LEN
                a = len(data)
            else:
                raise BpfError(f"load mode {mode:#x} is not allowed in seccomp")
        elif cls == 0x01:  # BPF_LDX
            mode = code & 0xE0
            x = {0x00: k, 0x60: mem[k % _MEMWORDS], 0x80: len(data)}.get(mode, -1)
            if x < 0:
                raise BpfError(f"ldx mode {mode:#x} is not allowed in seccomp")
        elif cls == 0x02:  # BPF_ST
            mem[k % _MEMWORDS] = a
        elif cls == 0x03:  # BPF_STX
            mem[k % _MEMWORDS] = x
        elif cls == 0x04:  # BPF_ALU
            operand = x if code & 0x08 else k
            a = _alu(code & 0xF0, a, operand)
        elif cls == 0x05:  # BPF_JMP
            op = code & 0xF0
            if op == 0x00:  # BPF_JA
                pc += k
                continue
            operand = x if code & 0x08 else k
            taken = {
                0x10: a == operand,  # JEQ
                0x20: a > operand,  # JGT
                0x30: a >= operand,  # JGE
                0x40: bool(a & operand),  # JSET
            }.get(op)
            if taken is None:
                raise BpfError(f"jump {op:#x} is unknown")
            pc += jt if taken else jf
        elif cls == 0x06:  # BPF_RET
            return a if (code & 0x18) == 0x10 else k
        elif code & 0xF8 == 0x00:  # BPF_MISC: TAX
            x = a
        else:  # BPF_MISC: TXA
            a = x
    raise BpfError("the program does not end")


def _alu(op: int, a: int, operand: int) -> int:
    mask = 0xFFFFFFFF
    if op in (0x30, 0x90) and operand == 0:  # DIV, MOD by zero: the kernel returns 0
        return 0
    results = {
        0x00: a + operand,
        0x10: a - operand,
        0x20: a * operand,
        0x30: a // (operand or 1),
        0x40: a | operand,
        0x50: a & operand,
        0x60: a << (operand & 31),
        0x70: a >> (operand & 31),
        0x80: -a,
        0x90: a % (operand or 1),
        0xA0: a ^ operand,
    }
    if op not in results:
        raise BpfError(f"alu {op:#x} is unknown")
    return results[op] & mask


def _severity(ret: int) -> int:
    """The kernel's order (kernel/seccomp.c seccomp_run_filters): the lowest action, taken as
    a signed 32-bit number, wins; KILL_PROCESS (0x80000000) is the most severe."""
    action = ret & _ACTION
    return action - (1 << 32) if action & 0x80000000 else action


def _answer(filters: Sequence[bytes], data: bytes) -> int:
    return min((run_filter(f, data) for f in filters), key=_severity, default=RET_ALLOW)


def getrandom_answer(filters: Sequence[bytes], machine: str) -> tuple[Getrandom, str]:
    """What getrandom(buf, 32, 0) gets under ``filters`` on ``machine``, and in words."""
    if machine not in GETRANDOM_NR:
        return Getrandom.UNKNOWN, f"jailshim does not know getrandom()'s number on {machine}"
    nr, arch = GETRANDOM_NR[machine]
    try:
        # two guesses at what jailshim cannot know: the buffer's address and the caller's IP
        first = _answer(filters, _data(nr, arch, 0x7F0000001000, (0x7F0000002000, 32, 0, 0, 0, 0)))
        other = _answer(filters, _data(nr, arch, 0x560000003000, (0x560000004000, 32, 0, 0, 0, 0)))
    except BpfError as exc:
        return Getrandom.UNKNOWN, f"its filter could not be read: {exc}"
    if _severity(first) != _severity(other) or (first & _DATA) != (other & _DATA):
        return Getrandom.UNKNOWN, "its filter's answer depends on the call site"
    return _getrandom_gets(first & _ACTION, first & _DATA)


def _getrandom_gets(action: int, value: int) -> tuple[Getrandom, str]:
    """getrandom()'s fate for the filters' one answer (``action``, its data ``value``)."""
    if action in (RET_ALLOW, RET_LOG):
        return Getrandom.WORKS, "its seccomp filter allows getrandom()"
    if action == RET_ERRNO:
        name = errno.errorcode.get(value, str(value))
        kind = {errno.ENOSYS: Getrandom.ENOSYS, errno.EPERM: Getrandom.EPERM}
        return kind.get(value, Getrandom.OTHER), f"its seccomp filter answers getrandom() {name}"
    if action in (RET_USER_NOTIF, RET_TRACE):
        return Getrandom.UNKNOWN, "its seccomp filter hands getrandom() to a supervisor or tracer"
    what = "kills the process" if action in (RET_KILL_PROCESS, RET_KILL_THREAD) else "traps"
    return Getrandom.OTHER, f"its seccomp filter {what} on getrandom()"
