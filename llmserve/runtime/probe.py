"""A one-shot grpc.health.v1 probe for container health checks.

    python -m llmserve.runtime.probe [ADDRESS] [--service NAME] [--timeout-s S]

ADDRESS defaults to `$LLMSERVE_ADDRESS` (the address the service listens on); a wildcard host
(`0.0.0.0`, `[::]`, empty) is probed on loopback. With the service's TLS settings
(`--tls-cert/--tls-key/--tls-ca` or their LLMSERVE_TLS_* variables, which a container already has)
it probes over TLS presenting that identity, as the internal services' mTLS requires; the
certificate must then name the host probed (loopback for a wildcard listen address). Exit status 0
when the service answers SERVING, 1 otherwise (NOT_SERVING, no answer, a refused handshake,
timeout), with one line on stderr saying why; 2 for bad arguments. Synchronous and import-light on
purpose: Docker and Kubernetes run it every few seconds.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmserve.runtime.service_settings import TLS_SETTINGS, ServiceSettings
from llmserve.runtime.tls import Tls, channel_credentials
from llmserve.settings import add_settings, config_from_args

_WILDCARD_HOSTS = ("", "0.0.0.0", "[::]", "::")


def probe_target(address: str) -> str:
    """The address to dial for a listen address: wildcard hosts become loopback."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} must be HOST:PORT")
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    return f"{host}:{port}"


def _channel(target: str, tls: Tls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, channel_credentials(tls))


def check(address: str, service: str = "", timeout_s: float = 3.0, tls: Tls | None = None) -> tuple[bool, str]:
    """(serving, what was seen) for one Health.Check call on `address` (over TLS with `tls`)."""
    try:
        with _channel(probe_target(address), tls) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
    except grpc.RpcError as err:
        return False, f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmserve.runtime.probe", description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", default=os.environ.get("LLMSERVE_ADDRESS", ""), help="HOST:PORT [env LLMSERVE_ADDRESS]")
    parser.add_argument("--service", default="", help="health service name ('' = the whole server)")
    parser.add_argument("--timeout-s", type=float, default=3.0)
    try:
        add_settings(parser, ServiceSettings, names=TLS_SETTINGS)
        args = parser.parse_args(argv)
        # The TLS settings (and ADDRESS, the one other setting it shares with a service).
        tls = config_from_args(ServiceSettings, args).load_tls()
    except (ValueError, OSError) as err:
        parser.error(str(err))
    if not args.address:
        parser.error("no address: pass HOST:PORT or set LLMSERVE_ADDRESS")
    try:
        serving, seen = check(args.address, args.service, args.timeout_s, tls)
    except ValueError as err:
        parser.error(str(err))
    if not serving:
        print(f"{args.address}: {seen}", file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
