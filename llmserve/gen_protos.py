"""Regenerates the Python stubs of `protos/llmserve/v1/*.proto` into `llmserve/v1/`.

Run `python -m llmserve.gen_protos` after editing a proto. The stubs are committed so that a fresh
checkout imports without a build step; `tests/contract/test_protos_fresh.py` checks they are current.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "llmserve" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Writes `llmserve/v1/*_pb2.py`, `*_pb2.pyi` and `*_pb2_grpc.py` under `out_dir`."""
    from grpc_tools import protoc
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    generate(REPO_ROOT)
    print(f"generated stubs for {len(proto_files())} protos into {REPO_ROOT / 'llmserve' / 'v1'}", file=sys.stderr)


if __name__ == "__main__":
    main()
