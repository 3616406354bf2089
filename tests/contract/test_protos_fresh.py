"""The committed stubs in llmserve/v1 are exactly what protoc makes from protos/ today."""

from __future__ import annotations

from pathlib import Path

from llmserve import gen_protos


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    gen_protos.generate(tmp_path)
    generated = sorted((tmp_path / "llmserve" / "v1").glob("*_pb2*.py*"))
    assert generated, "protoc produced no stubs"
    committed_dir = gen_protos.REPO_ROOT / "llmserve" / "v1"
    for fresh in generated:
        committed = committed_dir / fresh.name
        assert committed.exists(), f"{fresh.name} is not committed: run python -m llmserve.gen_protos"
        assert committed.read_text() == fresh.read_text(), f"{fresh.name} is stale: run python -m llmserve.gen_protos"
    stale_extra = {p.name for p in committed_dir.glob("*_pb2*.py*")} - {p.name for p in generated}
    assert not stale_extra, f"stubs without a proto: {sorted(stale_extra)}"


def test_every_proto_element_is_documented() -> None:
    """A doc comment on every service, RPC, message, field and enum value (the public contract)."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc
    import grpc_tools
    import tempfile

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        files = [str(p.relative_to(gen_protos.PROTO_ROOT)) for p in gen_protos.proto_files()]
        code = protoc.main(["protoc", f"-I{gen_protos.PROTO_ROOT}", f"-I{well_known}", "--include_source_info",
                            f"--descriptor_set_out={out}", *files])
        assert code == 0
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    undocumented: list[str] = []
    for fd in fds.file:
        documented = {tuple(loc.path) for loc in fd.source_code_info.location if loc.leading_comments.strip()}
        for mi, msg in enumerate(fd.message_type):
            if (4, mi) not in documented:
                undocumented.append(f"{fd.name}: message {msg.name}")
            for fi, fld in enumerate(msg.field):
                if (4, mi, 2, fi) not in documented:
                    undocumented.append(f"{fd.name}: field {msg.name}.{fld.name}")
        for ei, enum in enumerate(fd.enum_type):
            if (5, ei) not in documented:
                undocumented.append(f"{fd.name}: enum {enum.name}")
            assert enum.value[0].number == 0 and enum.value[0].name.endswith("_UNSPECIFIED"), enum.name
            for vi, value in enumerate(enum.value):
                if (5, ei, 2, vi) not in documented:
                    undocumented.append(f"{fd.name}: enum value {value.name}")
        for si, svc in enumerate(fd.service):
            if (6, si) not in documented:
                undocumented.append(f"{fd.name}: service {svc.name}")
            for ri, rpc in enumerate(svc.method):
                if (6, si, 2, ri) not in documented:
                    undocumented.append(f"{fd.name}: rpc {svc.name}.{rpc.name}")
        assert fd.package == "llmserve.v1"
    assert not undocumented, "undocumented proto elements:\n" + "\n".join(undocumented)
