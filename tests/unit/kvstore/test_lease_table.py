"""LeaseTable edge cases: atomic apply, refusal codes, expiry, late releases, re-registration."""

from __future__ import annotations

import pytest

from kvstore_svc.core import (
    GeometryConflictError,
    InvalidSpecError,
    LeaseSpec,
    LeaseTable,
    OutOfBlocksError,
    ServiceClass,
    UnknownWorkerError,
)

RT, DL, BE = ServiceClass.REAL_TIME, ServiceClass.DEADLINE, ServiceClass.BEST_EFFORT
TTL = 10.0


def table_with(num_blocks: int = 8, worker: str = "w0") -> LeaseTable:
    table = LeaseTable(TTL)
    table.register_pool(worker, num_blocks, block_size=16, bytes_per_block=1024, now=0.0)
    return table


def blocks_of(table: LeaseTable, worker: str, request: str) -> list[int]:
    lease = table.lease(worker, request)
    return [] if lease is None else list(lease.block_ids)


def test_apply_grants_from_both_ends_and_extends_leases() -> None:
    table = table_with(8)
    result = table.apply("w0", [], [LeaseSpec("rt", RT, 2), LeaseSpec("be", BE, 2), LeaseSpec("dl", DL, 1)], now=1.0)
    assert [g.block_ids for g in result.grants] == [(0, 1), (7, 6), (5,)]
    result = table.apply("w0", [], [LeaseSpec("rt", RT, 1)], now=2.0)
    assert result.grants[0].block_ids == (2,)
    assert blocks_of(table, "w0", "rt") == [0, 1, 2]
    assert table.worker("w0").pool.num_free == 2


def test_releases_come_first_and_feed_the_same_call() -> None:
    table = table_with(4)
    table.apply("w0", [], [LeaseSpec("be", BE, 4)], now=0.0)
    result = table.apply("w0", ["be"], [LeaseSpec("rt", RT, 4)], now=1.0)
    assert result.num_released == 4
    assert result.grants[0].block_ids == (0, 1, 2, 3)
    assert table.lease("w0", "be") is None


def test_refused_apply_changes_nothing() -> None:
    table = table_with(6)
    table.apply("w0", [], [LeaseSpec("a", RT, 2), LeaseSpec("b", BE, 2)], now=0.0)
    with pytest.raises(OutOfBlocksError) as info:
        # Releasing a (2) leaves 4 free; 3 + 2 = 5 asked.
        table.apply("w0", ["a"], [LeaseSpec("c", RT, 3), LeaseSpec("d", BE, 2)], now=1.0)
    assert (info.value.requested, info.value.free) == (5, 4)
    assert "5 blocks asked, 4 free" in str(info.value)
    assert blocks_of(table, "w0", "a") == [0, 1]
    assert blocks_of(table, "w0", "b") == [5, 4]
    assert table.lease("w0", "c") is None and table.worker("w0").pool.num_free == 2
    assert table.num_refused_applies == 1
    # A refused apply is not a sign of life either: the lease still expires on time.
    assert table.expire(TTL) == ["w0"]


@pytest.mark.parametrize(
    "specs, fragment",
    [
        ([LeaseSpec("", RT, 1)], "request_id is empty"),
        ([LeaseSpec("x", RT, 1), LeaseSpec("x", RT, 1)], "appears twice"),
        ([LeaseSpec("x", RT, -1)], "must be >= 0"),
        ([LeaseSpec("held", BE, 1)], "holds real_time blocks"),
    ],
)
def test_bad_specs_are_refused_without_change(specs: list[LeaseSpec], fragment: str) -> None:
    table = table_with(4)
    table.apply("w0", [], [LeaseSpec("held", RT, 1)], now=0.0)
    with pytest.raises(InvalidSpecError, match=fragment):
        table.apply("w0", [], specs, now=1.0)
    assert table.worker("w0").pool.num_free == 3


def test_released_request_may_change_class_in_the_same_call() -> None:
    table = table_with(4)
    table.apply("w0", [], [LeaseSpec("r", RT, 1)], now=0.0)
    result = table.apply("w0", ["r"], [LeaseSpec("r", BE, 2)], now=1.0)
    assert result.grants[0].block_ids == (3, 2)
    assert table.lease("w0", "r").service_class is BE  # type: ignore[union-attr]


def test_unknown_worker_is_not_found() -> None:
    table = table_with()
    with pytest.raises(UnknownWorkerError, match="RegisterPool"):
        table.apply("nobody", [], [LeaseSpec("r", RT, 1)], now=0.0)
    assert table.heartbeat("nobody", now=0.0).known is False


def test_heartbeat_keeps_leases_alive_and_silence_expires_them() -> None:
    table = table_with(8)
    table.register_pool("w1", 8, 16, 1024, now=0.0)
    table.apply("w0", [], [LeaseSpec("a", RT, 2)], now=0.0)
    table.apply("w1", [], [LeaseSpec("b", BE, 3)], now=0.0)
    for now in (4.0, 8.0, 12.0, 16.0):
        assert table.heartbeat("w0", now).num_leases == 1
        table.expire(now)
    # w1 was silent since 0: gone at the first expire() at or after TTL; w0 is still live.
    assert table.worker("w1").live is False and table.worker("w1").pool.num_free == 8
    assert table.worker("w1").num_expired_leases == 1 and table.num_expired_leases == 1
    assert blocks_of(table, "w0", "a") == [0, 1]
    beat = table.heartbeat("w1", now=17.0)
    assert (beat.known, beat.num_leases) == (False, 0)
    with pytest.raises(UnknownWorkerError, match="lease TTL"):
        table.apply("w1", [], [], now=17.0)


def test_expiry_boundary_is_the_ttl() -> None:
    table = table_with()
    table.apply("w0", [], [LeaseSpec("a", RT, 1)], now=5.0)  # apply renews too
    assert table.expire(5.0 + TTL - 0.001) == []
    assert table.expire(5.0 + TTL) == ["w0"]


def test_late_release_after_expiry_is_refused_without_harm() -> None:
    table = table_with(4)
    table.apply("w0", [], [LeaseSpec("old", BE, 2)], now=0.0)
    table.expire(TTL)
    table.register_pool("w0", 4, 16, 1024, now=TTL + 1)
    table.apply("w0", [], [LeaseSpec("new", RT, 3)], now=TTL + 1)
    # The worker releases a request whose lease expired: nothing is released, new leases stay.
    result = table.apply("w0", ["old", "never-seen"], [], now=TTL + 2)
    assert result.num_released == 0
    assert table.num_refused_releases == 2
    assert blocks_of(table, "w0", "new") == [0, 1, 2]
    assert table.worker("w0").pool.num_free == 1


def test_reregister_drops_leases_and_geometry_must_match_while_live() -> None:
    table = table_with(8)
    table.apply("w0", [], [LeaseSpec("a", RT, 5)], now=0.0)
    table.register_pool("w0", 8, 16, 1024, now=1.0)
    assert table.lease("w0", "a") is None and table.worker("w0").pool.num_free == 8
    assert table.num_dropped_on_register == 1
    with pytest.raises(GeometryConflictError, match="live with 8 blocks"):
        table.register_pool("w0", 16, 16, 1024, now=2.0)
    # Once expired, a new geometry is fine; the expired-lease count survives.
    table.apply("w0", [], [LeaseSpec("b", BE, 1)], now=2.0)
    table.expire(2.0 + TTL)
    table.register_pool("w0", 16, 32, 2048, now=20.0)
    assert table.worker("w0").geometry.num_blocks == 16
    assert table.worker("w0").num_expired_leases == 1


@pytest.mark.parametrize("field, args", [("num_blocks", (0, 16, 1)), ("block_size", (4, 0, 1)), ("bytes_per_block", (4, 16, 0))])
def test_register_validates_geometry(field: str, args: tuple[int, int, int]) -> None:
    table = LeaseTable(TTL)
    with pytest.raises(InvalidSpecError, match=field):
        table.register_pool("w", *args, now=0.0)
    with pytest.raises(InvalidSpecError, match="worker_id"):
        table.register_pool("", 4, 16, 1, now=0.0)
