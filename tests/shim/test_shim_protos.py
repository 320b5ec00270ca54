"""The committed protobuf modules are what generate.py makes from the committed .proto files, and they
describe containerd 1.6's wire names."""

from __future__ import annotations

from pathlib import Path

import pytest

from shim.protos import generate


def test_generated_modules_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) regenerates the modules")
    written = generate.generate(tmp_path)
    committed = Path(generate.__file__).parent
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in committed.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))
    assert len(names) == 2 * len(generate.proto_files())
    for path in written:
        assert path.read_text() == (committed / path.name).read_text(), f"{path.name} is stale: run generate.py"


def test_wire_names_are_containerds() -> None:
    from shim.protos import cgroups_v1_pb2, cgroups_v2_pb2, events_pb2, events_service_pb2, shim_pb2, task_pb2

    assert shim_pb2.DESCRIPTOR.services_by_name["Task"].full_name == "containerd.task.v2.Task"
    assert events_pb2.TaskExit.DESCRIPTOR.full_name == "containerd.events.TaskExit"
    assert events_service_pb2.DESCRIPTOR.services_by_name["Events"].full_name == \
        "containerd.services.events.ttrpc.v1.Events"
    assert task_pb2.Status.Value("PAUSING") == 5
    assert cgroups_v1_pb2.Metrics.DESCRIPTOR.full_name == "io.containerd.cgroups.v1.Metrics"
    assert cgroups_v2_pb2.Metrics.DESCRIPTOR.full_name == "io.containerd.cgroups.v2.Metrics"
    methods = [m.name for m in shim_pb2.DESCRIPTOR.services_by_name["Task"].methods]
    assert methods == ["State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint", "Kill",
                       "Exec", "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown"]
    # field numbers containerd's Go code uses (spot checks of the ones easiest to get wrong)
    fields = shim_pb2.StateResponse.DESCRIPTOR.fields_by_name
    assert (fields["exited_at"].number, fields["exec_id"].number) == (10, 11)
    assert cgroups_v2_pb2.Metrics.DESCRIPTOR.fields_by_name["memory"].number == 4


def test_importing_the_package_loads_no_protobuf() -> None:
    import subprocess
    import sys

    code = "import sys, shim, shim.ttrpc, shim.ttrpc.framing; print('google.protobuf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
