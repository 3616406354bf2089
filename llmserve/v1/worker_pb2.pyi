from llmserve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StepErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_ERROR_CODE_UNSPECIFIED: _ClassVar[StepErrorCode]
    STEP_ERROR_CODE_INVALID_PLAN: _ClassVar[StepErrorCode]
    STEP_ERROR_CODE_KV_REFUSED: _ClassVar[StepErrorCode]
    STEP_ERROR_CODE_KV_UNAVAILABLE: _ClassVar[StepErrorCode]
    STEP_ERROR_CODE_STEP_FAILED: _ClassVar[StepErrorCode]
STEP_ERROR_CODE_UNSPECIFIED: StepErrorCode
STEP_ERROR_CODE_INVALID_PLAN: StepErrorCode
STEP_ERROR_CODE_KV_REFUSED: StepErrorCode
STEP_ERROR_CODE_KV_UNAVAILABLE: StepErrorCode
STEP_ERROR_CODE_STEP_FAILED: StepErrorCode

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "model_name", "vocab_size", "max_model_len", "eos_token_ids", "block_size", "num_blocks", "bytes_per_block", "dtype", "device", "max_num_batched_tokens", "max_num_seqs", "step_cost")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_BLOCK_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_BATCHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_SEQS_FIELD_NUMBER: _ClassVar[int]
    STEP_COST_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    model_name: str
    vocab_size: int
    max_model_len: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    block_size: int
    num_blocks: int
    bytes_per_block: int
    dtype: str
    device: str
    max_num_batched_tokens: int
    max_num_seqs: int
    step_cost: StepCostModel
    def __init__(self, worker_id: _Optional[str] = ..., model_name: _Optional[str] = ..., vocab_size: _Optional[int] = ..., max_model_len: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., block_size: _Optional[int] = ..., num_blocks: _Optional[int] = ..., bytes_per_block: _Optional[int] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., max_num_batched_tokens: _Optional[int] = ..., max_num_seqs: _Optional[int] = ..., step_cost: _Optional[_Union[StepCostModel, _Mapping]] = ...) -> None: ...

class StepCostModel(_message.Message):
    __slots__ = ("a_s", "b_s_per_prefill_token", "c_s_per_decode_seq", "d_s_per_kv_token", "num_samples", "r2", "median_rel_error", "calibration_s")
    A_S_FIELD_NUMBER: _ClassVar[int]
    B_S_PER_PREFILL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    C_S_PER_DECODE_SEQ_FIELD_NUMBER: _ClassVar[int]
    D_S_PER_KV_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    R2_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_REL_ERROR_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_S_FIELD_NUMBER: _ClassVar[int]
    a_s: float
    b_s_per_prefill_token: float
    c_s_per_decode_seq: float
    d_s_per_kv_token: float
    num_samples: int
    r2: float
    median_rel_error: float
    calibration_s: float
    def __init__(self, a_s: _Optional[float] = ..., b_s_per_prefill_token: _Optional[float] = ..., c_s_per_decode_seq: _Optional[float] = ..., d_s_per_kv_token: _Optional[float] = ..., num_samples: _Optional[int] = ..., r2: _Optional[float] = ..., median_rel_error: _Optional[float] = ..., calibration_s: _Optional[float] = ...) -> None: ...

class NewRequest(_message.Message):
    __slots__ = ("request_id", "token_ids", "num_prompt_tokens", "sampling", "service_class", "num_output_tokens", "trace_context", "restore_from_checkpoint", "num_computed_tokens", "num_cached_tokens", "prefix_salt")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    NUM_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FROM_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    NUM_COMPUTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_SALT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    num_prompt_tokens: int
    sampling: _common_pb2.SamplingParams
    service_class: _common_pb2.ServiceClass
    num_output_tokens: int
    trace_context: _containers.ScalarMap[str, str]
    restore_from_checkpoint: bool
    num_computed_tokens: int
    num_cached_tokens: int
    prefix_salt: int
    def __init__(self, request_id: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., num_prompt_tokens: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., service_class: _Optional[_Union[_common_pb2.ServiceClass, str]] = ..., num_output_tokens: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., restore_from_checkpoint: _Optional[bool] = ..., num_computed_tokens: _Optional[int] = ..., num_cached_tokens: _Optional[int] = ..., prefix_salt: _Optional[int] = ...) -> None: ...

class ScheduledRequest(_message.Message):
    __slots__ = ("request_id", "num_tokens", "num_computed_tokens", "sample")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_COMPUTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    num_tokens: int
    num_computed_tokens: int
    sample: bool
    def __init__(self, request_id: _Optional[str] = ..., num_tokens: _Optional[int] = ..., num_computed_tokens: _Optional[int] = ..., sample: _Optional[bool] = ...) -> None: ...

class BatchPlan(_message.Message):
    __slots__ = ("step_id", "new_requests", "scheduled", "finished_request_ids", "preempted_request_ids", "checkpoint_request_ids", "drop_checkpoint_request_ids")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    PREEMPTED_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    DROP_CHECKPOINT_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    step_id: int
    new_requests: _containers.RepeatedCompositeFieldContainer[NewRequest]
    scheduled: _containers.RepeatedCompositeFieldContainer[ScheduledRequest]
    finished_request_ids: _containers.RepeatedScalarFieldContainer[str]
    preempted_request_ids: _containers.RepeatedScalarFieldContainer[str]
    checkpoint_request_ids: _containers.RepeatedScalarFieldContainer[str]
    drop_checkpoint_request_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, step_id: _Optional[int] = ..., new_requests: _Optional[_Iterable[_Union[NewRequest, _Mapping]]] = ..., scheduled: _Optional[_Iterable[_Union[ScheduledRequest, _Mapping]]] = ..., finished_request_ids: _Optional[_Iterable[str]] = ..., preempted_request_ids: _Optional[_Iterable[str]] = ..., checkpoint_request_ids: _Optional[_Iterable[str]] = ..., drop_checkpoint_request_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SampledToken(_message.Message):
    __slots__ = ("request_id", "token_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    token_id: int
    def __init__(self, request_id: _Optional[str] = ..., token_id: _Optional[int] = ...) -> None: ...

class StepTiming(_message.Message):
    __slots__ = ("forward_ns", "sample_ns", "kv_ns", "total_ns", "num_prefill_tokens", "num_decode_seqs", "num_kv_tokens_read", "checkpoint_bytes", "restore_bytes", "checkpoint_ns", "restore_ns", "num_recomputed_tokens", "plan_decode_ns", "encode_ns", "kv_rpcs")
    FORWARD_NS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_NS_FIELD_NUMBER: _ClassVar[int]
    KV_NS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    NUM_PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_DECODE_SEQS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_TOKENS_READ_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESTORE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_NS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_NS_FIELD_NUMBER: _ClassVar[int]
    NUM_RECOMPUTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PLAN_DECODE_NS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_NS_FIELD_NUMBER: _ClassVar[int]
    KV_RPCS_FIELD_NUMBER: _ClassVar[int]
    forward_ns: int
    sample_ns: int
    kv_ns: int
    total_ns: int
    num_prefill_tokens: int
    num_decode_seqs: int
    num_kv_tokens_read: int
    checkpoint_bytes: int
    restore_bytes: int
    checkpoint_ns: int
    restore_ns: int
    num_recomputed_tokens: int
    plan_decode_ns: int
    encode_ns: int
    kv_rpcs: int
    def __init__(self, forward_ns: _Optional[int] = ..., sample_ns: _Optional[int] = ..., kv_ns: _Optional[int] = ..., total_ns: _Optional[int] = ..., num_prefill_tokens: _Optional[int] = ..., num_decode_seqs: _Optional[int] = ..., num_kv_tokens_read: _Optional[int] = ..., checkpoint_bytes: _Optional[int] = ..., restore_bytes: _Optional[int] = ..., checkpoint_ns: _Optional[int] = ..., restore_ns: _Optional[int] = ..., num_recomputed_tokens: _Optional[int] = ..., plan_decode_ns: _Optional[int] = ..., encode_ns: _Optional[int] = ..., kv_rpcs: _Optional[int] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("step_id", "sampled", "timing", "error", "restore_failed_request_ids", "checkpoint_failed_request_ids", "error_code", "cached_block_hashes", "evicted_block_hashes", "demoted_block_hashes", "rejected_request_id")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FAILED_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FAILED_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    CACHED_BLOCK_HASHES_FIELD_NUMBER: _ClassVar[int]
    EVICTED_BLOCK_HASHES_FIELD_NUMBER: _ClassVar[int]
    DEMOTED_BLOCK_HASHES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    step_id: int
    sampled: _containers.RepeatedCompositeFieldContainer[SampledToken]
    timing: StepTiming
    error: str
    restore_failed_request_ids: _containers.RepeatedScalarFieldContainer[str]
    checkpoint_failed_request_ids: _containers.RepeatedScalarFieldContainer[str]
    error_code: StepErrorCode
    cached_block_hashes: _containers.RepeatedScalarFieldContainer[int]
    evicted_block_hashes: _containers.RepeatedScalarFieldContainer[int]
    demoted_block_hashes: _containers.RepeatedScalarFieldContainer[int]
    rejected_request_id: str
    def __init__(self, step_id: _Optional[int] = ..., sampled: _Optional[_Iterable[_Union[SampledToken, _Mapping]]] = ..., timing: _Optional[_Union[StepTiming, _Mapping]] = ..., error: _Optional[str] = ..., restore_failed_request_ids: _Optional[_Iterable[str]] = ..., checkpoint_failed_request_ids: _Optional[_Iterable[str]] = ..., error_code: _Optional[_Union[StepErrorCode, str]] = ..., cached_block_hashes: _Optional[_Iterable[int]] = ..., evicted_block_hashes: _Optional[_Iterable[int]] = ..., demoted_block_hashes: _Optional[_Iterable[int]] = ..., rejected_request_id: _Optional[str] = ...) -> None: ...
