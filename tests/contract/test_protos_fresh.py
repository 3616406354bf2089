"""The committed stubs in llmserve/v1 are exactly what protoc makes from protos/ today."""

from __future__ import annotations

from pathlib import Path

from llmserve import gen_protos

# What must carry a leading comment, by its field number in FileDescriptorProto (the path of a
# comment's location): its list, the list of its members, and how a report names both.
DOCUMENTED_KINDS = (
    (4, "message_type", "field", "message", "field"),
    (5, "enum_type", "value", "enum", "enum value"),
    (6, "service", "method", "service", "rpc"),
)


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
        for enum in fd.enum_type:
            assert enum.value[0].number == 0 and enum.value[0].name.endswith("_UNSPECIFIED"), enum.name
        for tag, elements, members, kind, member_kind in DOCUMENTED_KINDS:
            for i, element in enumerate(getattr(fd, elements)):
                if (tag, i) not in documented:
                    undocumented.append(f"{fd.name}: {kind} {element.name}")
                for j, member in enumerate(getattr(element, members)):
                    if (tag, i, 2, j) not in documented:  # 2: the member list's field number in each
                        undocumented.append(f"{fd.name}: {member_kind} {element.name}.{member.name}")
        assert fd.package == "llmserve.v1"
    assert not undocumented, "undocumented proto elements:\n" + "\n".join(undocumented)
