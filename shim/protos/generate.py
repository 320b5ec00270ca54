"""Regenerate the Python protobuf modules in this directory from its .proto files.

    python3 shim/protos/generate.py            # rewrite shim/protos/*_pb2.py and *_pb2.pyi
    generate(Path(tmp))                        # write them under tmp/shim/protos/ instead (the currency test)

grpcio-tools (pinned in pyproject's `test` extra) brings protoc and the google/protobuf/*.proto includes.
The .proto files import each other as "shim/protos/NAME.proto" so that protoc's Python output imports
`shim.protos.NAME_pb2`.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def proto_files() -> list[Path]:
    return sorted(HERE.glob("*.proto"))


def generate(out_root: Path = REPO) -> list[Path]:
    """Run protoc over every .proto here; return the files written (under out_root/shim/protos/)."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    relative = [str(p.relative_to(REPO)) for p in proto_files()]
    args = ["protoc", f"-I{REPO}", f"-I{include}", f"--python_out={out_root}", f"--pyi_out={out_root}", *relative]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    out_dir = out_root / "shim" / "protos"
    return sorted(p for p in out_dir.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(REPO))
    sys.exit(0)
