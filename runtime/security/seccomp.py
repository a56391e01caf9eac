"""The container's default seccomp filter: Docker's profile, compiled to classic BPF for x86_64.

Kernel interface (<linux/seccomp.h>, Documentation/userspace-api/seccomp_filter.rst): the
program is an array of ``struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}`` run on every
syscall over ``struct seccomp_data {int nr; u32 arch; u64 instruction_pointer; u64 args[6]}``
and returning an action. It is attached with seccomp(SECCOMP_SET_MODE_FILTER), which needs
no_new_privs (or CAP_SYS_ADMIN), and stays for the life of the process and its children.

``default_policy`` says what Docker's profile allows for a capability set, ``compile_filter``
turns a policy into BPF (pure, testable without installing) and ``install_filter`` attaches it.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from runtime import syscalls
from runtime.security import seccomp_profile as profile

# Actions (<linux/seccomp.h>); the kernel runs every attached filter and keeps the strictest.
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

AUDIT_ARCH_X86_64 = 0xC000003E  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
# x32 calls arrive with arch AUDIT_ARCH_X86_64 and this bit set in nr.
X32_SYSCALL_BIT = 0x40000000
BPF_MAXINSNS = 4096

# Classic BPF opcodes (<linux/bpf_common.h>) used by the generated program.
BPF_LD_W_ABS = 0x20
BPF_ALU_AND_K = 0x54
BPF_JA = 0x05
BPF_JEQ_K = 0x15
BPF_JGT_K = 0x25
BPF_JGE_K = 0x35
BPF_RET_K = 0x06

_NR, _ARCH, _ARGS = 0, 4, 16  # offsets in struct seccomp_data; args are little-endian u64
_U32, _U64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
_LEAF = 4  # syscall numbers compared one by one at the bottom of the search tree


def errno_action(code: int) -> int:
    """SECCOMP_RET_ERRNO with ``code`` in its data: the syscall fails with that errno."""
    if not 0 < code <= 4095:
        raise ValueError(f"errno {code} out of range: the kernel takes 1..4095")
    return SECCOMP_RET_ERRNO | code


ALLOW = SECCOMP_RET_ALLOW
EPERM = errno_action(errno.EPERM)  # Docker's defaultAction SCMP_ACT_ERRNO, defaultErrnoRet 1
ENOSYS = errno_action(errno.ENOSYS)


@dataclass(frozen=True)
class ArgCheck:
    """One comparison of syscall argument ``index`` (libseccomp's SCMP_CMP_EQ, _NE, _MASKED_EQ).

    ``width`` 32 compares only the low word: the kernel truncates an ``int`` argument such as
    socket's domain, so a set high word must not slip past the check (libseccomp compares all
    64 bits). For ``masked_eq`` the check is ``arg & mask == value``.
    """

    index: int
    op: Literal["eq", "ne", "masked_eq"]
    value: int
    mask: int = _U64
    width: Literal[32, 64] = 64

    def __post_init__(self) -> None:
        top = (1 << self.width) - 1
        if not 0 <= self.index <= 5:
            raise ValueError(f"argument index {self.index}: a syscall has arguments 0..5")
        if self.width not in (32, 64) or self.op not in ("eq", "ne", "masked_eq"):
            raise ValueError(f"{self.op}/{self.width}: ops are eq, ne, masked_eq; widths 32, 64")
        if self.op != "masked_eq" and self.mask != _U64:
            raise ValueError(f"mask {self.mask:#x} given to {self.op}: only masked_eq takes one")
        if not 0 <= self.value <= top or self.value & ~self.mask:
            raise ValueError(f"value {self.value:#x} is not a {self.width}-bit subset of the mask")

    def matches(self, arg: int) -> bool:
        arg &= (1 << self.width) - 1
        if self.op == "masked_eq":
            return arg & self.mask == self.value
        return (arg == self.value) == (self.op == "eq")


@dataclass(frozen=True)
class Rule:
    """``action`` for syscall ``nr`` when every check holds (none: always)."""

    name: str
    nr: int
    action: int
    checks: tuple[ArgCheck, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.nr < X32_SYSCALL_BIT:
            raise ValueError(f"{self.name}: syscall number {self.nr} not in 0..{X32_SYSCALL_BIT}")
        if not 0 <= self.action <= _U32:
            raise ValueError(f"{self.name}: action {self.action:#x} is not a u32")


@dataclass(frozen=True)
class SeccompPolicy:
    """What the filter does: ``rules`` in order, the first that matches a call decides it.

    Calls from another architecture and x32 calls get ``bad_arch_action``; numbers above
    ``enosys_above`` (newer than the syscall table) fail with ENOSYS, as runc does so that
    libc falls back to an older call instead of seeing EPERM; the rest ``default_action``.
    """

    rules: tuple[Rule, ...]
    default_action: int = EPERM
    arch: int = AUDIT_ARCH_X86_64
    bad_arch_action: int = SECCOMP_RET_KILL_PROCESS
    enosys_above: int | None = None

    def by_syscall(self) -> dict[int, tuple[Rule, ...]]:
        """The rules of each syscall, cut after the first unconditional one (never reached)."""
        out: dict[int, tuple[Rule, ...]] = {}
        for rule in self.rules:
            rules = out.get(rule.nr, ())
            if not rules or rules[-1].checks:
                out[rule.nr] = (*rules, rule)
        return out

    def action_for(self, nr: int, args: Sequence[int] = (0,) * 6, arch: int | None = None) -> int:
        """The action the compiled filter returns for this call (the reference semantics)."""
        nr &= _U32
        if (self.arch if arch is None else arch) != self.arch:
            return self.bad_arch_action
        if nr == _U32:  # -1: a tracer skipped the call; nothing runs
            return self.default_action
        if nr >= X32_SYSCALL_BIT:
            return self.bad_arch_action
        if self.enosys_above is not None and nr > self.enosys_above:
            return ENOSYS
        for rule in self.by_syscall().get(nr, ()):
            if all(check.matches(args[check.index]) for check in rule.checks):
                return rule.action
        return self.default_action


def running_kernel() -> tuple[int, int]:
    """(major, minor) of the running kernel, from uname(2)."""
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if found is None:
        raise ValueError(f"kernel release {os.uname().release!r} does not start with X.Y")
    return int(found[1]), int(found[2])


def default_policy(
    capabilities: Iterable[str] = frozenset(), kernel: tuple[int, int] | None = None
) -> SeccompPolicy:
    """Docker's default profile for a container whose effective capabilities are
    ``capabilities`` (kernel names, "CAP_SYS_ADMIN"), on kernel ``kernel`` (default: this one).
    """
    if isinstance(capabilities, str):
        raise TypeError(f"capabilities {capabilities!r}: want a set of names, not one string")
    caps = frozenset(capabilities)
    unknown = sorted(caps - set(profile.CAPABILITIES))
    if unknown:
        raise ValueError(
            f"unknown capabilities {', '.join(unknown)}: "
            f"use the kernel's names ({', '.join(profile.CAPABILITIES)})"
        )
    kernel = running_kernel() if kernel is None else kernel
    names = [*profile.ALLOWED, *profile.ARCH_ALLOWED]
    names += [n for version, more in profile.MIN_KERNEL_ALLOWED if kernel >= version for n in more]
    names += [n for cap, more in profile.CAPABILITY_ALLOWED.items() if cap in caps for n in more]
    rules: list[tuple[str, int, tuple[ArgCheck, ...]]] = [
        (name, ALLOW, ()) for name in dict.fromkeys(names)
    ]
    rules += _argument_rules(caps)
    table = profile.SYSCALLS_X86_64
    return SeccompPolicy(
        rules=tuple(Rule(n, table[n], a, c) for n, a, c in rules if n in table),
        enosys_above=max(table.values()),
    )


def _argument_rules(caps: frozenset[str]) -> list[tuple[str, int, tuple[ArgCheck, ...]]]:
    """The profile's entries with argument filters or "excludes": {"caps": ["CAP_SYS_ADMIN"]}."""
    rules: list[tuple[str, int, tuple[ArgCheck, ...]]] = [
        ("socket", ALLOW, (ArgCheck(0, "ne", profile.AF_VSOCK, width=32),)),
    ]
    rules += [
        ("personality", ALLOW, (ArgCheck(0, "eq", value, width=32),))
        for value in profile.PERSONALITY_ALLOWED
    ]
    if "CAP_SYS_ADMIN" not in caps:
        # With CAP_SYS_ADMIN, clone and clone3 are in the unconditional list instead.
        no_namespaces = ArgCheck(0, "masked_eq", 0, mask=profile.CLONE_NAMESPACE_FLAGS)
        rules.append(("clone", ALLOW, (no_namespaces,)))
        # clone3 passes its flags in memory, out of the filter's reach: ENOSYS makes glibc
        # fall back to clone, whose flags the rule above can see.
        rules.append(("clone3", ENOSYS, ()))
    return rules


class _Asm:
    """Classic BPF with forward labels; conditional offsets must fit the 8-bit jt/jf."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int | str, int | str, int | str]] = []
        self.labels: dict[str, int] = {}
        self.count = 0

    def new_label(self) -> str:
        self.count += 1
        return f"L{self.count}"

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def emit(self, code: int, k: int | str = 0, jt: int | str = 0, jf: int | str = 0) -> None:
        self.code.append((code, jt, jf, k))

    def assemble(self) -> bytes:
        out = bytearray()
        for i, (code, jt, jf, k) in enumerate(self.code):
            if code == BPF_JA:
                k = self._offset(i, k, _U32)
            else:
                jt, jf = self._offset(i, jt, 255), self._offset(i, jf, 255)
            out += struct.pack("<HBBI", code, jt, jf, k)
        return bytes(out)

    def _offset(self, i: int, target: int | str, limit: int) -> int:
        if isinstance(target, int):
            return target
        offset = self.labels[target] - i - 1
        if not 0 <= offset <= limit:
            raise ValueError(f"jump at instruction {i} to {target} is {offset}: allowed 0..{limit}")
        return offset


def compile_filter(policy: SeccompPolicy) -> bytes:
    """The classic BPF program (packed struct sock_filter array) that enforces ``policy``.

    Layout: check arch, then nr (x32, -1, too new), then a binary search over the syscall
    numbers whose leaves end in short blocks that test arguments and return. Every
    conditional jump is local (a few instructions), and the tree's long jumps use BPF_JA with
    its 32-bit offset, so allowlists of any length stay within jt/jf's 8 bits. Paths that
    never load an argument let the kernel (5.11+) cache those syscalls as always allowed.
    """
    asm = _Asm()
    bad_arch, minus_one, known = asm.new_label(), asm.new_label(), asm.new_label()
    asm.emit(BPF_LD_W_ABS, _ARCH)
    asm.emit(BPF_JEQ_K, policy.arch, jt=0, jf=bad_arch)
    asm.emit(BPF_LD_W_ABS, _NR)
    asm.emit(BPF_JGE_K, X32_SYSCALL_BIT, jt=0, jf=known)
    asm.emit(BPF_JEQ_K, _U32, jt=minus_one, jf=bad_arch)
    asm.label(minus_one)
    asm.emit(BPF_RET_K, policy.default_action)
    asm.label(bad_arch)
    asm.emit(BPF_RET_K, policy.bad_arch_action)
    asm.label(known)
    if policy.enosys_above is not None:
        asm.emit(BPF_JGT_K, policy.enosys_above, jt=0, jf=1)
        asm.emit(BPF_RET_K, ENOSYS)
    _emit_tree(asm, sorted(policy.by_syscall().items()), policy.default_action)
    program = asm.assemble()
    if len(program) // 8 > BPF_MAXINSNS:
        raise ValueError(f"{len(program) // 8} instructions: the kernel takes {BPF_MAXINSNS}")
    return program


def _emit_tree(asm: _Asm, entries: list[tuple[int, tuple[Rule, ...]]], default: int) -> None:
    if len(entries) <= _LEAF:
        _emit_leaf(asm, entries, default)
        return
    middle = len(entries) // 2
    right = asm.new_label()
    asm.emit(BPF_JGE_K, entries[middle][0], jt=0, jf=1)
    asm.emit(BPF_JA, right)
    _emit_tree(asm, entries[:middle], default)
    asm.label(right)
    _emit_tree(asm, entries[middle:], default)


def _emit_leaf(asm: _Asm, entries: list[tuple[int, tuple[Rule, ...]]], default: int) -> None:
    # Syscalls with the same rules (most: one unconditional ALLOW) share one block.
    blocks: dict[tuple[tuple[int, tuple[ArgCheck, ...]], ...], str] = {}
    for nr, rules in entries:
        key = tuple((rule.action, rule.checks) for rule in rules)
        asm.emit(BPF_JEQ_K, nr, jt=blocks.setdefault(key, asm.new_label()), jf=0)
    asm.emit(BPF_RET_K, default)
    for key, label in blocks.items():
        asm.label(label)
        for action, checks in key:
            failed = asm.new_label()
            for check in checks:
                _emit_check(asm, check, failed)
            asm.emit(BPF_RET_K, action)
            asm.label(failed)
        if key[-1][1]:  # the last rule had checks: a call that failed them all
            asm.emit(BPF_RET_K, default)


def _emit_check(asm: _Asm, check: ArgCheck, failed: str) -> None:
    low = _ARGS + 8 * check.index
    words = [(low, check.value & _U32, check.mask & _U32)]
    if check.width == 64:
        words.insert(0, (low + 4, check.value >> 32, (check.mask >> 32) & _U32))
    if check.op == "ne":  # passes when any compared word differs
        passed = asm.new_label()
        for n, (offset, value, _) in enumerate(words):
            asm.emit(BPF_LD_W_ABS, offset)
            last = n == len(words) - 1
            asm.emit(BPF_JEQ_K, value, jt=failed if last else 0, jf=0 if last else passed)
        asm.label(passed)
        return
    for offset, value, mask in words:
        if mask == 0:  # value is a subset of the mask: 0, always equal
            continue
        asm.emit(BPF_LD_W_ABS, offset)
        if check.op == "masked_eq" and mask != _U32:
            asm.emit(BPF_ALU_AND_K, mask)
        asm.emit(BPF_JEQ_K, value, jt=0, jf=failed)


def install_filter(program: bytes) -> None:
    """Attach ``program`` to the calling thread with seccomp(SECCOMP_SET_MODE_FILTER, 0).

    Call it last before execve (after no_new_privs, capabilities and the user switch): from
    here on the process, and everything it starts, runs under the filter.
    """
    count = len(program) // 8
    if len(program) % 8 or not 0 < count <= BPF_MAXINSNS:
        raise ValueError(
            f"program of {len(program)} bytes: want 1..{BPF_MAXINSNS} 8-byte instructions"
        )
    try:
        syscalls.seccomp_set_mode_filter(program)
    except OSError as err:
        if err.errno == errno.EACCES:
            raise OSError(
                err.errno,
                f"{err.strerror}: set no_new_privs (prctl PR_SET_NO_NEW_PRIVS) before "
                "installing a seccomp filter, or hold CAP_SYS_ADMIN",
            ) from err
        raise
