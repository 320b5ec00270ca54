"""Fuzz the OCI config parser: ``parse_config`` / ``parse_process`` (decode + validate) and, for configs that
pass, compiling their seccomp section with libseccomp.

An input is used twice: as JSON text (when it parses), and as the seed of a structure-aware mutation of a
valid default config (``mutate_tree``), so most inputs reach deep into the decoder and validator instead of
stopping at the JSON syntax. Only ``StyroliteError`` (ConfigError...) may come out.

    python3 bench/fuzz_oci_config.py [--runs 1000000] [--engine atheris|mutate] [--seed N]
"""

from __future__ import annotations

import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzz_common import main, mutate_tree, stages

from styrolite.spec import default_config
from styrolite.spec.parse import parse_config, parse_process

BASE = default_config()
BASE["linux"].setdefault("seccomp", {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                                     "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                                                  {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                                                   "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]})
BASE["linux"]["namespaces"].append({"type": "user"})
BASE["linux"].setdefault("uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}])
BASE["linux"].setdefault("gidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}])
BASE["linux"].setdefault("resources", {"memory": {"limit": 1 << 20}, "pids": {"limit": 10}})


def _check(doc: object) -> None:
    spec = parse_config(doc)
    seccomp = getattr(spec.linux, "seccomp", None) if spec.linux else None
    if seccomp is not None:
        from styrolite.security.seccomp import compile_filter

        compile_filter(seccomp)


def _text(data: bytes) -> None:
    try:
        doc = json.loads(data)
    except ValueError:
        return
    parse_config(doc)


def _mutated(data: bytes) -> None:
    rng = random.Random(data)
    mutated = mutate_tree(BASE, rng)
    if rng.random() < 0.2:
        parse_process(mutated.get("process") if isinstance(mutated, dict) else mutated)
    else:
        _check(mutated)


def target(data: bytes) -> None:
    stages(lambda: _text(data), lambda: _mutated(data))


def seeds() -> list[bytes]:
    return [json.dumps(BASE).encode(), json.dumps(BASE["process"]).encode(), b"{}", b"[]", b'{"ociVersion": 1}']


if __name__ == "__main__":
    sys.exit(main("oci-config", target, seeds(), tokens=[b'"ociVersion"', b'"process"', b'"linux"', b'"mounts"'],
                  max_len=8192))
