"""The fuzzing harness shared by bench/fuzz_*.py and the short CI pass (tests/fuzz/test_fuzz_short.py).

A fuzz target is ``target(data: bytes) -> None``. It may raise only the project's typed errors
(``StyroliteError`` and its subclasses: ConfigError, ZoneConfigError, LayerError, ImageError...; ``IdmError`` and
its subclasses: ProtocolError...); anything else is a finding. Two engines:

* ``atheris`` (coverage-guided libFuzzer, when the ``atheris`` package is installed): the default for long runs;
* ``mutate``: a seeded, dependency-free mutation fuzzer (bit flips, byte edits, splices, dictionary tokens)
  over a seed corpus: deterministic for a given seed, used by CI.

Both print the number of inputs run and every distinct non-typed exception (type, message, where, input).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from idm.errors import IdmError  # noqa: E402
from styrolite.errors import StyroliteError  # noqa: E402

Target = Callable[[bytes], None]
TYPED: tuple[type[BaseException], ...] = (StyroliteError, IdmError)


@dataclass
class Finding:
    kind: str
    message: str
    where: str
    data: bytes
    count: int = 1


@dataclass
class Stats:
    name: str
    runs: int = 0
    typed: int = 0
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def report(self) -> str:
        elapsed = time.monotonic() - self.started
        lines = [f"{self.name}: {self.runs} inputs in {elapsed:.1f} s ({self.runs / max(elapsed, 1e-9):.0f}/s), "
                 f"{self.typed} typed errors, {len(self.findings)} distinct non-typed exceptions"]
        for f in self.findings.values():
            lines.append(f"  FINDING x{f.count}: {f.kind}: {f.message[:200]} at {f.where}; input {f.data[:120]!r}")
        return "\n".join(lines)


def stages(*steps: Callable[[], object]) -> None:
    """Run every step even when an earlier one raises a typed error (so each input reaches every reader); the
    first typed error is re-raised at the end for the counts."""
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except TYPED as e:
            first = first or e
    if first is not None:
        raise first


def check_one(target: Target, data: bytes, stats: Stats) -> None:
    """Run one input; count typed errors, record anything else as a finding (deduplicated by type and place)."""
    stats.runs += 1
    try:
        target(data)
    except TYPED:
        stats.typed += 1
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = f"{os.path.relpath(tb[-1].filename, REPO)}:{tb[-1].lineno}" if tb else "?"
        key = (type(e).__name__, where)
        if key in stats.findings:
            stats.findings[key].count += 1
        else:
            stats.findings[key] = Finding(type(e).__name__, str(e), where, bytes(data))
            print(f"{stats.name}: NEW FINDING {type(e).__name__}: {str(e)[:200]} at {where}; input "
                  f"{bytes(data)[:120]!r}", file=sys.stderr, flush=True)


# --- the dependency-free mutation engine ---------------------------------------------------------------------

INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
               b"\x80\x00\x00\x00", b"-1", b"0", b"1e308", b"9999999999999999999999", b"null", b"true", b"[]",
               b"{}", b'""', b"..", b"/", b"../../", b"\\u0000")


def mutate(data: bytes, rng: random.Random, corpus: Sequence[bytes], tokens: Sequence[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:                                   # flip a bit
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:                                 # set a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:                                         # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and buf:                                 # delete a range
            buf[pos:pos + rng.randint(1, 64)] = b""
        elif op == 4 and buf:                                 # duplicate a range
            chunk = buf[pos:pos + rng.randint(1, 256)]
            buf[pos:pos] = chunk * rng.randint(1, 4)
        elif op == 5:                                         # insert an interesting value
            buf[pos:pos] = rng.choice(INTERESTING)
        elif op == 6 and tokens:                              # insert or overwrite with a dictionary token
            token = rng.choice(tokens)
            if rng.random() < 0.5:
                buf[pos:pos] = token
            else:
                buf[pos:pos + len(token)] = token
        elif op == 7 and corpus:                              # splice with another seed
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 8 and buf:                                 # truncate
            del buf[pos:]
    return bytes(buf[:1 << 20])


def run_mutation(name: str, target: Target, seeds: Sequence[bytes], *, runs: int, seed: int = 0,
                 seconds: float | None = None, tokens: Sequence[bytes] = (), progress: bool = False) -> Stats:
    """``runs`` inputs (or until ``seconds`` pass): the seeds themselves first, then mutations of them."""
    rng = random.Random(seed)
    stats = Stats(name)
    corpus = [bytes(s) for s in seeds] or [b""]
    deadline = None if seconds is None else time.monotonic() + seconds
    last = time.monotonic()
    for data in corpus[:runs]:
        check_one(target, data, stats)
    while stats.runs < runs and (deadline is None or time.monotonic() < deadline):
        check_one(target, mutate(rng.choice(corpus), rng, corpus, tokens), stats)
        if progress and time.monotonic() - last > 30:
            last = time.monotonic()
            print(f"{name}: {stats.runs} inputs so far, {len(stats.findings)} findings", file=sys.stderr, flush=True)
    return stats


def run_atheris(name: str, target: Target, seeds: Sequence[bytes], *, runs: int, seed: int, max_len: int) -> None:
    """Coverage-guided: libFuzzer drives ``target``; the report is printed at exit (libFuzzer calls exit)."""
    import tempfile

    import atheris

    stats = Stats(name)

    def one(data: bytes) -> None:
        if not stats.runs:
            stats.started = time.monotonic()  # not counting atheris' instrumentation of every loaded module
        check_one(target, data, stats)
        if stats.runs == runs:  # libFuzzer leaves with _exit after the last run: atexit would not run
            print(stats.report(), flush=True)

    corpus = tempfile.mkdtemp(prefix=f"fuzz-{name}-")
    for i, data in enumerate(seeds):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(data)
    atheris.instrument_all()
    args = [sys.argv[0], f"-runs={runs}", f"-seed={seed or 1}", f"-max_len={max_len}", "-rss_limit_mb=4096",
            "-print_final_stats=1", corpus]
    atheris.Setup(args, one)
    atheris.Fuzz()


def main(name: str, target: Target, seeds: Sequence[bytes], *, tokens: Sequence[bytes] = (),
         max_len: int = 8192) -> int:
    parser = argparse.ArgumentParser(description=f"fuzz {name}")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs to run (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto",
                        help="auto: atheris when installed, else the mutation engine")
    options = parser.parse_args()
    engine = options.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "mutate"
    print(f"{name}: engine {engine}, {options.runs} inputs, seed {options.seed}", flush=True)
    if engine == "atheris":
        run_atheris(name, target, seeds, runs=options.runs, seed=options.seed, max_len=max_len)
        return 0
    stats = run_mutation(name, target, seeds, runs=options.runs, seed=options.seed, tokens=tokens, progress=True)
    print(stats.report(), flush=True)
    return 1 if stats.findings else 0


# --- structure-aware mutation of JSON documents ----------------------------------------------------------------

HOSTILE_VALUES: tuple[object, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**32, 2**63, 2**64, -(2**63) - 1, 10**30, 1.5, -0.0, 1e308, float("inf"),
    "", "/", "..", "../../etc/passwd", "/proc/self/root", "a" * 5000, "\x00", "\udcff", "é", "0", "-1", "true",
    "SIGKILL", "SCMP_ACT_ALLOW", "CAP_SYS_ADMIN", "bind", "rbind", "tmpfs", "/dev/sda", "1.0.2", "x=y", "=", "PATH",
    [], {}, [None], [[[[[]]]]], {"": None}, {"type": "pid"}, {"names": ["mount"], "action": "SCMP_ACT_ALLOW"},
)


def _random_path(doc: object, rng: random.Random) -> tuple:
    """A random node of the tree, by a random walk from the root (deeper nodes less likely, O(depth))."""
    path: tuple = ()
    node = doc
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path, node = (*path, key), node[key]
    return path


def _random_value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if roll < 0.6 or depth > 3:
        value = rng.choice(HOSTILE_VALUES)
        return json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value  # never share
    if roll < 0.8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(("type", "path", "source", "options", "names", "action", "x", "")): _random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 4))}


def mutate_tree(doc: object, rng: random.Random, edits: int | None = None) -> object:
    """A deep copy of ``doc`` with a few random edits: replace, delete, add a key, duplicate, swap type."""
    doc = json.loads(json.dumps(doc))  # a deep copy, faster than copy.deepcopy
    for _ in range(edits if edits is not None else rng.randint(1, 6)):
        path = _random_path(doc, rng)
        if not path:
            if rng.random() < 0.05:
                return _random_value(rng)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]  # type: ignore[index]
        key = path[-1]
        op = rng.randrange(5)
        if op == 0 or op == 1:
            parent[key] = _random_value(rng)  # type: ignore[index]
        elif op == 2:
            del parent[key]  # type: ignore[arg-type]
        elif op == 3 and isinstance(parent, dict):
            parent[rng.choice(("extra", "x", "type", "path", "id", str(rng.random())))] = _random_value(rng)
        elif op == 3 and isinstance(parent, list):
            twin = json.loads(json.dumps(parent[key])) if rng.random() < 0.7 else _random_value(rng)
            parent.insert(rng.randrange(len(parent) + 1), twin)
        else:
            value = parent[key]  # type: ignore[index]
            parent[key] = [value] if not isinstance(value, list) else {"v": value}  # type: ignore[index]
    return doc
