"""Process-security building blocks the container init calls in the forked child, after ``pivot_root``.

Order (each module's docstring says why)::

    filter = compile_filter(linux.seccomp)    # seccomp: in the PARENT, before fork (errors early, cached)
    --- fork ---
    set_dumpable(False)                       # process_attrs: CVE-2019-5736 defence, first
    apply_rlimits(process.rlimits)            # rlimits: needs CAP_SYS_RESOURCE to raise, before setuid
    set_oom_score_adj / set_personality / set_umask
    [filter.load()]                           # here instead, if noNewPrivileges is false (needs CAP_SYS_ADMIN)
    keep_caps_across_setuid()                 # capabilities: PR_SET_KEEPCAPS before the uid change
    setgroups / setresgid / setresuid         # (the container init's user step)
    apply_capabilities(process.capabilities)  # capabilities: bounding, I/P/E, ambient; returns warnings
    set_no_new_privs()                        # process_attrs: if process.noNewPrivileges
    filter.load()                             # seccomp: last before execve, if noNewPrivileges is true

tests/security/test_security_sequence.py runs exactly this and checks the result from the exec'd program.
"""

from styrolite.security.capabilities import (
    CAPABILITY_NAMES,
    CAPABILITY_NUMBERS,
    DEFAULT_CAPABILITIES,
    CapabilityPlan,
    apply_capabilities,
    capability_name,
    capability_number,
    current_capabilities,
    keep_caps_across_setuid,
    last_cap,
    mask_to_names,
    names_to_mask,
    plan_capabilities,
    validate_capabilities,
)
from styrolite.security.process_attrs import (
    PERSONALITY_DOMAINS,
    set_dumpable,
    set_no_new_privs,
    set_oom_score_adj,
    set_personality,
    set_umask,
    validate_oom_score_adj,
    validate_personality,
)
from styrolite.security.rlimits import RLIMIT_NUMBERS, apply_rlimits, validate_rlimits

# libseccomp and the default profile are loaded on first use: a container without linux.seccomp never needs them
_SECCOMP_EXPORTS = {"SeccompFilter": "seccomp", "compile_filter": "seccomp", "default_filter": "seccomp",
                    "validate_seccomp": "seccomp", "default_profile": "seccomp_default",
                    "native_architectures": "seccomp_default"}


def __getattr__(name: str) -> object:
    module = _SECCOMP_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "CAPABILITY_NAMES",
    "CAPABILITY_NUMBERS",
    "DEFAULT_CAPABILITIES",
    "PERSONALITY_DOMAINS",
    "RLIMIT_NUMBERS",
    "CapabilityPlan",
    "SeccompFilter",
    "apply_capabilities",
    "apply_rlimits",
    "capability_name",
    "capability_number",
    "compile_filter",
    "current_capabilities",
    "default_filter",
    "default_profile",
    "keep_caps_across_setuid",
    "last_cap",
    "mask_to_names",
    "names_to_mask",
    "native_architectures",
    "plan_capabilities",
    "set_dumpable",
    "set_no_new_privs",
    "set_oom_score_adj",
    "set_personality",
    "set_umask",
    "validate_capabilities",
    "validate_oom_score_adj",
    "validate_personality",
    "validate_rlimits",
    "validate_seccomp",
]
