"""Proto <-> domain conversion of the KV store: restore chunking, lease specs. (Its errors map to
statuses through the one table: tests/contract/test_error_status_table.py.)"""

from __future__ import annotations

import pytest

from kvstore_svc import convert
from kvstore_svc.core import CheckpointData, ServiceClass
from llmserve.errors import InvalidRequestError
from llmserve.v1 import common_pb2, kvstore_pb2


def test_restore_chunks_cover_each_block_in_order_under_the_limit() -> None:
    data = CheckpointData("r", "float32", (10,), 40, num_tokens=9, blocks=(bytes(range(40)), bytes(range(40, 80))))
    chunks = list(convert.checkpoint_to_pb_chunks(data, max_chunk_bytes=16))
    assert [(c.block_index, c.offset, len(c.data)) for c in chunks] == [
        (0, 0, 16), (0, 16, 16), (0, 32, 8), (1, 0, 16), (1, 16, 16), (1, 32, 8)
    ]
    assert [c.final for c in chunks] == [False] * 5 + [True]
    assert chunks[-1].num_tokens == 9 and all(c.num_tokens == 0 for c in chunks[:-1])
    assert b"".join(c.data for c in chunks) == bytes(range(80))
    assert all(c.dtype == "float32" and list(c.shape) == [10] and c.block_bytes == 40 for c in chunks)
    # A round trip through the domain chunk keeps every field.
    back = convert.chunk_from_pb(chunks[-1])
    assert (back.request_id, back.block_index, back.offset, back.shape, back.final, back.num_tokens) == ("r", 1, 32, (10,), True, 9)


def test_restore_chunks_from_a_first_block_keep_the_checkpoints_block_indices() -> None:
    data = CheckpointData("r", "float32", (10,), 40, num_tokens=19, blocks=(bytes(40), bytes(40)), first_block=3)
    chunks = list(convert.checkpoint_to_pb_chunks(data, max_chunk_bytes=40))
    assert [(c.block_index, c.final) for c in chunks] == [(3, False), (4, True)]
    request = kvstore_pb2.RestoreRequest(request_id="r", dtype="float32", first_block_index=3)
    assert convert.restore_from_pb(request) == ("r", "float32", (), 3)


def test_lease_specs_need_a_service_class() -> None:
    request = kvstore_pb2.ApplyRequest(
        worker_id="w",
        leases=[
            kvstore_pb2.LeaseSpec(request_id="a", service_class=common_pb2.SERVICE_CLASS_DEADLINE, num_blocks=2),
            kvstore_pb2.LeaseSpec(request_id="b", num_blocks=1),
        ],
    )
    with pytest.raises(InvalidRequestError, match=r"leases\[1\].service_class"):
        convert.lease_specs_from_pb(request)
    del request.leases[1]
    [spec] = convert.lease_specs_from_pb(request)
    assert (spec.request_id, spec.service_class, spec.num_blocks) == ("a", ServiceClass.DEADLINE, 2)
