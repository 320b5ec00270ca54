"""The libseccomp declarations Styrolite uses, compiled by cffi (out-of-line ABI mode) into _seccomp_ffi.py.

Regenerate after editing ``CDEF``:  python styrolite/security/seccomp_ffi_build.py (run as a file: importing
the package needs the generated module)
tests/security checks that the committed module matches these declarations.
"""

from __future__ import annotations

import os
import sys

CDEF = """
typedef void *scmp_filter_ctx;
typedef uint64_t scmp_datum_t;
struct scmp_arg_cmp {
    unsigned int arg;
    int op;
    scmp_datum_t datum_a;
    scmp_datum_t datum_b;
};
struct scmp_version { unsigned int major; unsigned int minor; unsigned int micro; };

const struct scmp_version *seccomp_version(void);
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
uint32_t seccomp_arch_resolve_name(const char *arch_name);
uint32_t seccomp_arch_native(void);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
int seccomp_syscall_resolve_name(const char *name);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned int arg_cnt,
                           const struct scmp_arg_cmp *arg_array);
int seccomp_export_bpf(const scmp_filter_ctx ctx, int fd);
"""

MODULE = "styrolite.security._seccomp_ffi"


def generate(target_dir: str) -> str:
    """Write _seccomp_ffi.py into target_dir; returns its path."""
    from styrolite.ffigen import emit_abi_module

    return emit_abi_module(CDEF, MODULE, os.path.join(target_dir, "_seccomp_ffi.py"))


if __name__ == "__main__":
    print(generate(os.path.dirname(os.path.abspath(__file__))), file=sys.stderr)
