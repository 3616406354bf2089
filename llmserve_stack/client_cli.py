"""The client commands of `llmserve`: `generate` (stream a completion), `cancel` (a running request
by id) and `model-info`, against a running gateway. Their defaults are the API's own (an unset
option is left unset, so the server's default applies); a bad value is a usage error."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from llmserve.errors import LlmServeError, UnavailableError

DEFAULT_ADDRESS = "127.0.0.1:50051"
# `--class` spellings -> gateway.client's service class names.
CLASS_NAMES = {"rt": "real_time", "real_time": "real_time", "deadline": "deadline", "be": "best_effort",
               "best_effort": "best_effort"}
# Targets for `--class rt` / `--class deadline` given without them: the gateway's default SLO targets.
CLASS_SLO_DEFAULTS = {"real_time": {"ttft_ms": 2000.0, "tpot_ms": 200.0}, "deadline": {"deadline_ms": 60_000.0}}


def _bounded(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
             what: str = "") -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what}")
        return value

    return parse


def _pem_file(path: str) -> str:
    """A readable PEM CA file (a usage error otherwise)."""
    from llmserve.runtime.tls import Tls

    try:
        Tls.from_files(path)
    except (OSError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"{path}: {err}") from None
    return path


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"gateway address (default: {DEFAULT_ADDRESS})")
    parser.add_argument("--api-key", default=os.environ.get("LLMSERVE_API_KEY"),
                        help="API key, where the gateway has keys on (default: env LLMSERVE_API_KEY)")
    parser.add_argument("--tls-ca", default=None, metavar="CA_FILE", type=_pem_file,
                        help="connect over TLS, verifying the gateway against this PEM CA (llmserve up --tls prints it)")


def add_client_parsers(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate", help="stream a completion from a running gateway",
        description="Streams a completion from a running gateway (start one with `llmserve up`). Options left "
                    "out are left unset, so the server's defaults apply, as for any API client.")
    gen.add_argument("prompt", help="the prompt text")
    _connection(gen)
    gen.add_argument("--class", dest="service_class", default=None, choices=sorted(CLASS_NAMES),
                     help="service class (default: the server's default SLO, real-time unless its operator changed it)")
    gen.add_argument("--ttft-ms", type=_bounded(float, 0, low_open=True, what="use milliseconds > 0"), default=None,
                     help="real-time: time to first token (default with --class rt: 2000)")
    gen.add_argument("--tpot-ms", type=_bounded(float, 0, low_open=True, what="use milliseconds > 0"), default=None,
                     help="real-time: time per output token (default with --class rt: 200)")
    gen.add_argument("--deadline-ms", type=_bounded(float, 0, low_open=True, what="use milliseconds > 0"),
                     default=None, help="deadline class: time to the last token (default with --class deadline: 60000)")
    gen.add_argument("--priority", type=int, default=0, help="lower runs first under --policy priority (default: 0)")
    gen.add_argument("--max-tokens", type=_bounded(int, 1, what="use 1 or more"), default=None,
                     help="tokens to generate (default: the server's, 16)")
    gen.add_argument("--temperature", type=_bounded(float, 0, what="use 0 (greedy) or more"), default=None,
                     help="sampling temperature, 0 for greedy (default: the server's, 1.0)")
    gen.add_argument("--top-p", type=_bounded(float, 0, 1, low_open=True, what="use a value in (0, 1]"), default=None,
                     help="nucleus sampling (default: the server's, 1.0: off)")
    gen.add_argument("--top-k", type=_bounded(int, 0, what="use 0 (off) or more"), default=0,
                     help="top-k sampling (default: 0, off)")
    gen.add_argument("--seed", type=_bounded(int, 0, 2**64 - 1, what="use an integer from 0 to 2^64-1"), default=None,
                     help="sampling seed (default: a random one per request)")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--ignore-eos", action="store_true", help="keep generating past the end-of-sequence token")
    gen.add_argument("--chat", action="store_true", help="apply the model's chat template")
    gen.add_argument("--request-id", default="",
                     help="an id of your own, e.g. to `llmserve cancel` it (default: assigned)")
    gen.add_argument("--tenant", default="")
    gen.add_argument("--usage", action="store_true", help="print the id, class, token counts and latencies at the end")

    cancel = subparsers.add_parser("cancel", help="cancel a running request by id",
                                   description="Cancels a running request (its stream ends with "
                                               "FINISH_REASON_CANCELLED).")
    cancel.add_argument("request_id")
    _connection(cancel)
    info = subparsers.add_parser("model-info", help="describe the served model, workers and policy")
    _connection(info)


def _request(args: argparse.Namespace) -> Any:
    from gateway.client import build_request

    service_class = CLASS_NAMES[args.service_class] if args.service_class else None
    slo = {"ttft_ms": args.ttft_ms, "tpot_ms": args.tpot_ms, "deadline_ms": args.deadline_ms}
    if service_class is None and (args.ttft_ms is not None or args.tpot_ms is not None):
        service_class = "real_time"
    elif service_class is None and args.deadline_ms is not None:
        service_class = "deadline"
    for name, default in CLASS_SLO_DEFAULTS.get(service_class or "", {}).items():
        if slo[name] is None:
            slo[name] = default
    return build_request(
        args.prompt, request_id=args.request_id, max_tokens=args.max_tokens or 0, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=args.stop, ignore_eos=args.ignore_eos,
        service_class=service_class, priority=args.priority, tenant=args.tenant, apply_chat_template=args.chat, **slo,
    )


def _explain(err: LlmServeError, address: str, tls_ca: str | None) -> str:
    text = str(err)
    if isinstance(err, UnavailableError) and any(s in text.lower() for s in ("connect", "refused", "unreachable")):
        # A plaintext client at a TLS gateway sees the same refusal as at no gateway at all.
        tls_hint = "" if tls_ca else "; if it serves TLS (`llmserve up --tls`), pass --tls-ca"
        return (f"no gateway answers at {address} (UNAVAILABLE: {text}): start one with `llmserve up` "
                f"or pass --address{tls_hint}")
    return f"{type(err).__name__}: {text}"


async def run_generate(args: argparse.Namespace) -> int:
    from gateway.client import GatewayClient
    from llmserve.v1 import common_pb2

    request = _request(args)
    last = None
    async with GatewayClient(args.address, api_key=args.api_key, tls_ca=args.tls_ca) as client:
        try:
            async for chunk in client.generate_request(request):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                last = chunk
        except LlmServeError as err:
            print(f"\nerror: {_explain(err, args.address, args.tls_ca)}", file=sys.stderr)
            return 2
    sys.stdout.write("\n")
    if args.usage and last is not None:
        usage, slo = last.usage, last.slo
        print(f"[{common_pb2.FinishReason.Name(last.finish_reason)}] id {last.request_id}, "
              f"class {common_pb2.ServiceClass.Name(slo.service_class)}, prompt {usage.prompt_tokens} tokens, "
              f"completion {usage.completion_tokens} tokens, TTFT {usage.ttft_ms:.1f} ms, "
              f"TPOT {usage.mean_tpot_ms:.1f} ms, SLO {'met' if usage.slo_attained else 'missed'}", file=sys.stderr)
    return 0


async def run_cancel(args: argparse.Namespace) -> int:
    from gateway.client import GatewayClient

    async with GatewayClient(args.address, api_key=args.api_key, tls_ca=args.tls_ca) as client:
        try:
            cancelled = await client.cancel(args.request_id)
        except LlmServeError as err:
            print(f"error: {_explain(err, args.address, args.tls_ca)}", file=sys.stderr)
            return 2
    print("cancelled" if cancelled else f"no running request {args.request_id!r} (finished, or never started)")
    return 0 if cancelled else 1


async def run_model_info(args: argparse.Namespace) -> int:
    from gateway.client import GatewayClient

    async with GatewayClient(args.address, api_key=args.api_key, tls_ca=args.tls_ca) as client:
        try:
            info = await client.model_info()
        except LlmServeError as err:
            print(f"error: {_explain(err, args.address, args.tls_ca)}", file=sys.stderr)
            return 2
    rows = [("model", info.model_name), ("context length", info.max_context_length), ("vocabulary", info.vocab_size),
            ("EOS token ids", ", ".join(map(str, info.eos_token_ids))), ("chat template", info.has_chat_template),
            ("workers", info.num_workers), ("KV block size", info.kv_block_size), ("policy", info.scheduling_policy)]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0
