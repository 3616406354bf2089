from llmserve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterPoolRequest(_message.Message):
    __slots__ = ("worker_id", "num_blocks", "block_size", "bytes_per_block", "held", "reserved_low_block_ids", "reserved_high_block_ids")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_BLOCK_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_LOW_BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_HIGH_BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    num_blocks: int
    block_size: int
    bytes_per_block: int
    held: _containers.RepeatedCompositeFieldContainer[Holding]
    reserved_low_block_ids: _containers.RepeatedScalarFieldContainer[int]
    reserved_high_block_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, worker_id: _Optional[str] = ..., num_blocks: _Optional[int] = ..., block_size: _Optional[int] = ..., bytes_per_block: _Optional[int] = ..., held: _Optional[_Iterable[_Union[Holding, _Mapping]]] = ..., reserved_low_block_ids: _Optional[_Iterable[int]] = ..., reserved_high_block_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RegisterPoolResponse(_message.Message):
    __slots__ = ("lease_ttl_ms", "store_incarnation")
    LEASE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    STORE_INCARNATION_FIELD_NUMBER: _ClassVar[int]
    lease_ttl_ms: int
    store_incarnation: str
    def __init__(self, lease_ttl_ms: _Optional[int] = ..., store_incarnation: _Optional[str] = ...) -> None: ...

class Holding(_message.Message):
    __slots__ = ("request_id", "service_class", "block_ids", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    service_class: _common_pb2.ServiceClass
    block_ids: _containers.RepeatedScalarFieldContainer[int]
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., service_class: _Optional[_Union[_common_pb2.ServiceClass, str]] = ..., block_ids: _Optional[_Iterable[int]] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("worker_id", "sequence", "release_request_ids", "assignments", "unreserve_block_ids", "reserve_low", "reserve_high")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    UNRESERVE_BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    RESERVE_LOW_FIELD_NUMBER: _ClassVar[int]
    RESERVE_HIGH_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    sequence: int
    release_request_ids: _containers.RepeatedScalarFieldContainer[str]
    assignments: _containers.RepeatedCompositeFieldContainer[Holding]
    unreserve_block_ids: _containers.RepeatedScalarFieldContainer[int]
    reserve_low: int
    reserve_high: int
    def __init__(self, worker_id: _Optional[str] = ..., sequence: _Optional[int] = ..., release_request_ids: _Optional[_Iterable[str]] = ..., assignments: _Optional[_Iterable[_Union[Holding, _Mapping]]] = ..., unreserve_block_ids: _Optional[_Iterable[int]] = ..., reserve_low: _Optional[int] = ..., reserve_high: _Optional[int] = ...) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ("sequence", "reserved_low_block_ids", "reserved_high_block_ids", "num_released")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_LOW_BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_HIGH_BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_RELEASED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    reserved_low_block_ids: _containers.RepeatedScalarFieldContainer[int]
    reserved_high_block_ids: _containers.RepeatedScalarFieldContainer[int]
    num_released: int
    def __init__(self, sequence: _Optional[int] = ..., reserved_low_block_ids: _Optional[_Iterable[int]] = ..., reserved_high_block_ids: _Optional[_Iterable[int]] = ..., num_released: _Optional[int] = ...) -> None: ...

class LeaseSpec(_message.Message):
    __slots__ = ("request_id", "service_class", "num_blocks", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    service_class: _common_pb2.ServiceClass
    num_blocks: int
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., service_class: _Optional[_Union[_common_pb2.ServiceClass, str]] = ..., num_blocks: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("worker_id", "release_request_ids", "leases")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    release_request_ids: _containers.RepeatedScalarFieldContainer[str]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseSpec]
    def __init__(self, worker_id: _Optional[str] = ..., release_request_ids: _Optional[_Iterable[str]] = ..., leases: _Optional[_Iterable[_Union[LeaseSpec, _Mapping]]] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("request_id", "block_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    block_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[str] = ..., block_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("grants", "num_released")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    NUM_RELEASED_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    num_released: int
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., num_released: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("num_leases", "known")
    NUM_LEASES_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    num_leases: int
    known: bool
    def __init__(self, num_leases: _Optional[int] = ..., known: _Optional[bool] = ...) -> None: ...

class GetPoolStatsRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class WatchCapacityRequest(_message.Message):
    __slots__ = ("min_interval_ms",)
    MIN_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    min_interval_ms: int
    def __init__(self, min_interval_ms: _Optional[int] = ...) -> None: ...

class PoolStats(_message.Message):
    __slots__ = ("worker_id", "num_blocks", "num_free", "num_real_time", "num_best_effort", "num_leases", "num_expired_leases", "num_checkpoints", "host_tier_bytes", "live", "num_reserved", "store_incarnation", "host_tier_capacity_bytes")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    NUM_FREE_FIELD_NUMBER: _ClassVar[int]
    NUM_REAL_TIME_FIELD_NUMBER: _ClassVar[int]
    NUM_BEST_EFFORT_FIELD_NUMBER: _ClassVar[int]
    NUM_LEASES_FIELD_NUMBER: _ClassVar[int]
    NUM_EXPIRED_LEASES_FIELD_NUMBER: _ClassVar[int]
    NUM_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    HOST_TIER_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    NUM_RESERVED_FIELD_NUMBER: _ClassVar[int]
    STORE_INCARNATION_FIELD_NUMBER: _ClassVar[int]
    HOST_TIER_CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    num_blocks: int
    num_free: int
    num_real_time: int
    num_best_effort: int
    num_leases: int
    num_expired_leases: int
    num_checkpoints: int
    host_tier_bytes: int
    live: bool
    num_reserved: int
    store_incarnation: str
    host_tier_capacity_bytes: int
    def __init__(self, worker_id: _Optional[str] = ..., num_blocks: _Optional[int] = ..., num_free: _Optional[int] = ..., num_real_time: _Optional[int] = ..., num_best_effort: _Optional[int] = ..., num_leases: _Optional[int] = ..., num_expired_leases: _Optional[int] = ..., num_checkpoints: _Optional[int] = ..., host_tier_bytes: _Optional[int] = ..., live: _Optional[bool] = ..., num_reserved: _Optional[int] = ..., store_incarnation: _Optional[str] = ..., host_tier_capacity_bytes: _Optional[int] = ...) -> None: ...

class KvChunk(_message.Message):
    __slots__ = ("request_id", "block_index", "data", "offset", "block_bytes", "dtype", "shape", "num_tokens", "final")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    BLOCK_BYTES_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    block_index: int
    data: bytes
    offset: int
    block_bytes: int
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    num_tokens: int
    final: bool
    def __init__(self, request_id: _Optional[str] = ..., block_index: _Optional[int] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ..., block_bytes: _Optional[int] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., num_tokens: _Optional[int] = ..., final: _Optional[bool] = ...) -> None: ...

class CheckpointResponse(_message.Message):
    __slots__ = ("num_blocks", "bytes_stored")
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    BYTES_STORED_FIELD_NUMBER: _ClassVar[int]
    num_blocks: int
    bytes_stored: int
    def __init__(self, num_blocks: _Optional[int] = ..., bytes_stored: _Optional[int] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("request_id", "dtype", "shape", "first_block_index")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    FIRST_BLOCK_INDEX_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    first_block_index: int
    def __init__(self, request_id: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., first_block_index: _Optional[int] = ...) -> None: ...

class DropCheckpointRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class DropCheckpointResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...
