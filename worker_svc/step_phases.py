"""Where the worker's time goes, step by step: the phases of `llmserve_step_phase_seconds_total`.

A step's phases add up to its wall time (plan received to result built, `step_seconds`):

- `plan_decode`: the plan's protobuf decoding and the plan book's drops and admission;
- `kv`: its leases (from the blocks held ahead, plus any store RPC waited for);
- `dispatch`: handing the step to the forward thread and its result back to the event loop
  (the thread's wake-up and the loop's turn; on a busy machine, waiting for a core or the GIL);
  `to_thread` is its first part (submitted until the thread began), `from_thread` the second
  (the thread done until the loop ran on);
- `prepare`: on the forward thread before the forward (grants, restores, the chunks, the inputs;
  `inputs` is the input tensors' part of it, `restore` the checkpoint copies in);
- `forward`, `sample`;
- `commit`: the sampled tokens into the plan book and the step's timing; `lazy_checkpoint` the
  copies of full blocks of running requests for the host tier;
- `other`: the rest (tracing, restore fetches, metrics, checkpoint hand-offs).

Outside any step, and so not in its wall time: `encode` (the result's protobuf), `report` (the
rest of building the result: its timing, the step's metrics, the prefix cache's report, the
background sync's start) and `idle` (waiting for the next plan while requests are in flight: the
pipeline ran dry; the wait of a worker with no requests is not counted). gRPC's write of a result
overlaps the next step (server.py hands results to the stream through a queue): it is no phase.
"""

from __future__ import annotations

from llmserve.plan import StepResult
from llmserve.runtime.metrics import ServiceMetrics
from llmserve.types import StepTiming

from worker_svc.core.types import FinishPhases

# The phases whose sum is a step's wall time, and the ones between steps.
STEP_PHASES = ("plan_decode", "kv", "dispatch", "prepare", "forward", "sample", "commit", "lazy_checkpoint", "other")
DETAIL_PHASES = ("inputs", "restore", "to_thread", "from_thread")  # parts of `prepare`, `dispatch`: not in the sum
BETWEEN_STEPS = ("encode", "report", "idle")


def step_phases(timing: StepTiming, finish: FinishPhases, *, total_ns: int, plan_decode_ns: int, kv_ns: int,
                to_thread_ns: int, from_thread_ns: int, encode_ns: int) -> dict[str, int]:
    """A successful step's time by phase, ns (`to_thread_ns`, `from_thread_ns`: the loop's wait for
    the forward thread before its call began and after it ended)."""
    phases = {"plan_decode": plan_decode_ns, "kv": kv_ns, "dispatch": to_thread_ns + from_thread_ns,
              "prepare": finish.prepare_ns, "forward": timing.forward_ns, "sample": timing.sample_ns,
              "commit": finish.commit_ns, "lazy_checkpoint": finish.lazy_checkpoint_ns}
    phases["other"] = total_ns - sum(phases.values())
    phases |= {"inputs": finish.inputs_ns, "restore": finish.restore_ns, "to_thread": to_thread_ns,
               "from_thread": from_thread_ns, "encode": encode_ns}
    return phases


def observe_step(metrics: ServiceMetrics | None, worker_id: str, output: StepResult, batch_size: int,
                 num_restores: int, total_ns: int, fetch_ns: int) -> None:
    """A successful step's metrics: its wall time, tokens, batch size and host-tier traffic
    (none without a registry or a timing)."""
    if metrics is None or (t := output.timing) is None:
        return
    metrics.observe_step(worker_id, seconds=total_ns / 1e9, prefill_tokens=t.num_prefill_tokens,
                         decode_tokens=t.num_decode_seqs, batch_size=batch_size)
    metrics.observe_checkpoint_step(
        saved_bytes=t.checkpoint_bytes, restored_bytes=t.restore_bytes, save_s=t.checkpoint_ns / 1e9,
        restore_s=(t.restore_ns + fetch_ns) / 1e9, restores=num_restores - len(output.restore_failed_request_ids),
        recomputed_tokens=t.num_recomputed_tokens)
