# Compile an OCI runtime-spec seccomp profile (JSON on stdin) into the classic
# BPF program libseccomp generates for it (raw struct sock_filter array on
# stdout). Rules follow runc's reading of the spec: syscall names unknown here
# are skipped in rules that allow (the filter is then stricter; one in a rule
# that refuses fails the compile), a rule whose action is the default is
# skipped, and several
# conditions on one argument index become separate rules (OR), because
# libseccomp refuses two comparisons of one argument in a rule.
import errno
import json
import sys

import seccomp

ARCHES = {
    "SCMP_ARCH_X86": "X86", "SCMP_ARCH_X86_64": "X86_64", "SCMP_ARCH_X32": "X32",
    "SCMP_ARCH_ARM": "ARM", "SCMP_ARCH_AARCH64": "AARCH64",
    "SCMP_ARCH_MIPS": "MIPS", "SCMP_ARCH_MIPS64": "MIPS64", "SCMP_ARCH_MIPS64N32": "MIPS64N32",
    "SCMP_ARCH_MIPSEL": "MIPSEL", "SCMP_ARCH_MIPSEL64": "MIPSEL64", "SCMP_ARCH_MIPSEL64N32": "MIPSEL64N32",
    "SCMP_ARCH_PPC": "PPC", "SCMP_ARCH_PPC64": "PPC64", "SCMP_ARCH_PPC64LE": "PPC64LE",
    "SCMP_ARCH_S390": "S390", "SCMP_ARCH_S390X": "S390X", "SCMP_ARCH_RISCV64": "RISCV64",
}
OPS = {
    "SCMP_CMP_NE": seccomp.NE, "SCMP_CMP_LT": seccomp.LT, "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_EQ": seccomp.EQ, "SCMP_CMP_GE": seccomp.GE, "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}


def action(name, errno_ret):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno.EPERM if errno_ret is None else errno_ret)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return seccomp.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return seccomp.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return seccomp.TRAP
    if name == "SCMP_ACT_LOG":
        return seccomp.LOG
    if name == "SCMP_ACT_TRACE":
        return seccomp.TRACE(errno.EPERM if errno_ret is None else errno_ret)
    raise ValueError("unsupported seccomp action %r" % name)


def main():
    spec = json.load(sys.stdin)
    default = action(spec["defaultAction"], spec.get("defaultErrnoRet"))
    f = seccomp.SyscallFilter(default)
    for a in spec.get("architectures") or []:
        if a not in ARCHES:
            raise ValueError("unsupported seccomp architecture %r" % a)
        arch = getattr(seccomp.Arch, ARCHES[a])
        if not f.exist_arch(arch):
            f.add_arch(arch)
    skipped = []
    for rule in spec.get("syscalls") or []:
        act = action(rule["action"], rule.get("errnoRet"))
        if act == default:
            continue
        by_index = {}
        for arg in rule.get("args") or []:
            if arg["op"] not in OPS:
                raise ValueError("unsupported seccomp operator %r" % arg["op"])
            by_index.setdefault(arg["index"], []).append(
                seccomp.Arg(arg["index"], OPS[arg["op"]], arg.get("value", 0), arg.get("valueTwo", 0)))
        split = any(len(v) > 1 for v in by_index.values())
        conds = [c for v in by_index.values() for c in v]
        for name in rule["names"]:
            if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) == -1:
                if act != seccomp.ALLOW:
                    # Skipping a refusal would make the filter weaker than
                    # the profile: refuse to compile it instead.
                    raise ValueError("syscall %r of a %s rule is unknown to this libseccomp" % (name, rule["action"]))
                skipped.append(name)
                continue
            if split:
                for c in conds:
                    f.add_rule(act, name, c)
            else:
                f.add_rule(act, name, *conds)
    f.export_bpf(sys.stdout)
    sys.stdout.flush()
    if skipped:
        print("skipped syscalls unknown here: " + " ".join(sorted(set(skipped))), file=sys.stderr)


main()
