"""PID 1 giving back what the boot leaves behind: the start-up modules it never uses, the C heap's free pages."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

from zoneinit import memory, memory_ffi_build


def test_generated_module_is_up_to_date(tmp_path: Path):
    memory_ffi_build.generate(str(tmp_path))
    committed = Path(memory_ffi_build.__file__).with_name("_memory_ffi.py").read_text()
    assert (tmp_path / "_memory_ffi.py").read_text() == committed, "run: python -m zoneinit.memory_ffi_build"


def test_drop_forgets_the_module_and_clears_what_it_held():
    name = "zone_test_startup_only"
    module = types.ModuleType(name)
    module.table = list(range(10))
    sys.modules[name] = module
    assert memory.drop_startup_modules((name, "zone_test_never_loaded")) == [name]
    assert name not in sys.modules
    assert vars(module) == {}   # a holder of the module object (Nuitka's patch) keeps nothing else alive


def test_a_dropped_module_imports_again_fresh():
    # in a child interpreter: dropping the real inspect here would pull it from under pytest
    code = ("import inspect, sys\nfrom zoneinit.memory import drop_startup_modules\n"
            "print(drop_startup_modules())\nimport inspect as again\n"
            "print(again is not inspect, callable(again.signature), 'ast' in sys.modules)\n"
            "import traceback\ntry:\n    again.signature(None)\nexcept TypeError:\n"
            "    print('return Signature.from_callable(' in traceback.format_exc())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['inspect', 'ast', 'dis', 'opcode', 'linecache', 'tokenize', 'token']"
    assert out[1] == "True True True"
    assert out[2] == "True"   # a traceback still shows its source line (linecache imported afresh)


def test_datetime_from_c_serves_msgpack_and_the_same_names():
    code = ("import sys\nfrom zoneinit.memory import datetime_from_c\nprint(datetime_from_c(), datetime_from_c())\n"
            "import datetime, msgpack\nprint(datetime.__name__)\n"
            "now = datetime.datetime.now(datetime.timezone.utc)\n"
            "print(msgpack.unpackb(msgpack.packb(now, datetime=True), timestamp=3) == now)\n"
            "print(sorted(n for n in dir(datetime) if not n.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:3] == ["True False", "_datetime", "True"]
    full = subprocess.run([sys.executable, "-c", "import datetime\nprint(sorted(n for n in dir(datetime) if not "
                           "n.startswith('_') and n != 'sys'))"], capture_output=True, text=True, check=True).stdout
    assert out[3] == full.strip()   # the public names of datetime.py, every one


def test_trim_heap_returns_whether_pages_went_back():
    assert memory.trim_heap() in (True, False)


def test_pid1_boot_paths_leave_heavy_stdlib_out():
    """PID 1 reads its helpers' results with pickle's C half and hands bpf() its buffers through the seam's cffi:
    pickle.py and ctypes would each stay resident for the zone's life (~0.4 MB of heap apiece); traceback and
    cgroup v1's driver are imported only when a failure is formatted, on a v1 host; IDM uses _socket, not
    socket.py; typing is imported for type checkers only."""
    code = ("import sys\nimport zoneinit.init, zoneinit.isolate, zoneinit.idm.service, zoneinit.containers.manager\n"
            "import styrolite.api, styrolite.lifecycle.create, styrolite.cgroups.v2, styrolite.cgroups.bpf\n"
            "print(sorted({'pickle', 'ctypes', 'traceback', 'styrolite.cgroups.v1', 'socket', 'typing'}\n"
            "             & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
