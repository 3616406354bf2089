"""TLS on every hop: a process's identity (its certificate and key) and the cluster CA, turned into
gRPC server and channel credentials.

The internal services (scheduler, workers, kvstore) require mutual TLS: a caller must present a
certificate that the cluster CA signed (the cluster identity), or the handshake fails before any
RPC is read. The gateway's public port verifies no client certificate (public clients
authenticate at the gateway, with API keys); its own channel to the scheduler presents the
identity like every other member's. Channels verify the server's certificate against the CA and
its name against the host they dial, so a certificate must name every host a peer dials it by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

_PEM_MARK = b"-----BEGIN "


@dataclass(frozen=True)
class Tls:
    """PEM bytes: the CA that signs every member of the cluster, and this process's certificate
    chain and private key (both None for a client with no identity, which can reach only the
    gateway)."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a TLS identity needs both a certificate and its key")

    @classmethod
    def from_files(cls, ca: str, cert: str | None = None, key: str | None = None) -> Tls:
        """Reads the PEM files (OSError when one cannot be read, ValueError naming one that is not PEM)."""
        return cls(_read_pem(ca, "CA"), _read_pem(cert, "certificate"), _read_pem(key, "key"))

    @property
    def has_identity(self) -> bool:
        return self.cert is not None


def _read_pem(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    data = Path(path).read_bytes()
    if _PEM_MARK not in data:
        raise ValueError(f"TLS {what} file {path} holds no PEM block")
    return data


def server_credentials(tls: Tls, *, require_client_cert: bool) -> grpc.ServerCredentials:
    """Credentials of a server presenting `tls`'s certificate. `require_client_cert`: mTLS, only
    callers with a certificate signed by `tls.ca` complete the handshake (the internal services);
    otherwise any TLS client may connect (the gateway's public port)."""
    if tls.cert is None or tls.key is None:
        raise ValueError("a TLS server needs a certificate and key (--tls-cert, --tls-key)")
    return grpc.ssl_server_credentials(
        [(tls.key, tls.cert)],
        root_certificates=tls.ca if require_client_cert else None,
        require_client_auth=require_client_cert,
    )


def channel_credentials(tls: Tls) -> grpc.ChannelCredentials:
    """Credentials of a channel that verifies its server against `tls.ca` and presents `tls`'s
    certificate, when it has one (the cluster identity an internal service asks for)."""
    return grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert)
