"""Throwaway certificates for llmserve's TLS: a CA and the certificates it signs, made with the
`openssl` command (OpenSSL 1.1.1 or later; no Python dependency).

`llmserve up --tls` makes a fresh CA per run, in a private temporary folder it deletes on exit,
with one certificate per service and one for itself (its health checks). For compose and
Kubernetes, make the cluster identity once:

    python -m llmserve_stack.certs deploy/tls

writes `ca.crt`, `ca.key` (keep it out of the cluster) and `tls.crt`/`tls.key`, a certificate for
both server and client use whose names cover compose's and the manifests' service hosts
(`CLUSTER_HOSTS`; `--host` adds more). docs/deploy.md says how to mount them. Every certificate is
EC P-256, valid for `--days` (default 365; `llmserve up`'s: 7).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmserve.runtime.tls import Tls

# The hosts a compose or Kubernetes peer dials a service by (deploy/k8s, compose.yaml), plus
# loopback, where the in-container health probe dials.
CLUSTER_HOSTS: tuple[str, ...] = (
    "localhost", "127.0.0.1", "::1",
    "kvstore", "scheduler", "gateway", "worker", *(f"worker-{i}" for i in range(16)),
    "*.worker", "*.worker.llmserve.svc", "*.worker.llmserve.svc.cluster.local",
    *(f"{name}.llmserve.svc" for name in ("kvstore", "scheduler", "gateway")),
    *(f"{name}.llmserve.svc.cluster.local" for name in ("kvstore", "scheduler", "gateway")),
)

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {common_name}
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = @names
[names]
{names}
"""


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalCa:
    """A CA in a folder: `ca.crt` (what every member trusts) and `ca.key` (what signs)."""

    folder: Path
    cert: Path
    key: Path
    days: int

    @classmethod
    def create(cls, folder: str | os.PathLike[str], days: int = 365, name: str = "llmserve local CA") -> LocalCa:
        """Makes a CA in `folder` (created, mode 0700). RuntimeError when `openssl` is missing or fails."""
        folder = Path(folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca = cls(folder, folder / "ca.crt", folder / "ca.key", days)
        config = _write_config(folder / "ca.cnf", name, ())
        _openssl("req", "-x509", "-config", str(config), "-extensions", "ca", *_NEW_KEY, "-keyout", str(ca.key),
                 "-out", str(ca.cert), "-days", str(days))
        ca.key.chmod(0o600)
        config.unlink()
        return ca

    def issue(self, name: str, hosts: Sequence[str], stem: str | None = None) -> Issued:
        """A certificate for `name` (its common name) valid for `hosts` (DNS names, wildcards or IP
        addresses), usable as server and as client; written as `<stem or name>.crt` / `.key`."""
        if not hosts:
            raise ValueError("a certificate needs at least one host name")
        stem = stem or name
        issued = Issued(self.folder / f"{stem}.crt", self.folder / f"{stem}.key")
        config = _write_config(self.folder / f"{stem}.cnf", name, hosts)
        request = self.folder / f"{stem}.csr"
        _openssl("req", "-new", "-config", str(config), *_NEW_KEY, "-keyout", str(issued.key), "-out", str(request))
        issued.key.chmod(0o600)
        _openssl("x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-set_serial", f"0x{secrets.randbits(63):x}", "-days", str(self.days), "-extfile", str(config),
                 "-extensions", "leaf", "-out", str(issued.cert))
        request.unlink()
        config.unlink()
        return issued

    def tls(self, issued: Issued | None) -> Tls:
        """The `Tls` of a member holding `issued` (None: a client that only verifies servers)."""
        if issued is None:
            return Tls.from_files(str(self.cert))
        return Tls.from_files(str(self.cert), str(issued.cert), str(issued.key))


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _write_config(path: Path, common_name: str, hosts: Sequence[str]) -> Path:
    names = []
    for index, host in enumerate(dict.fromkeys(hosts), start=1):
        kind = "IP" if _is_ip(host) else "DNS"
        names.append(f"{kind}.{index} = {host}")
    path.write_text(_CONFIG.format(common_name=common_name, names="\n".join(names) or "DNS.1 = localhost"))
    return path


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("making TLS certificates needs the openssl command (install OpenSSL 1.1.1 or later)")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmserve_stack.certs", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where to write ca.crt, ca.key, tls.crt and tls.key")
    parser.add_argument("--host", action="append", default=[], help="another host name or IP the services are "
                                                                     "dialed by (repeatable)")
    parser.add_argument("--days", type=int, default=365, help="validity of the CA and the certificate")
    args = parser.parse_args(argv)
    try:
        ca = LocalCa.create(args.folder, days=args.days, name="llmserve cluster CA")
        issued = ca.issue("llmserve cluster", [*CLUSTER_HOSTS, *args.host], stem="tls")
    except (RuntimeError, OSError, ValueError) as err:
        print(f"llmserve certs: {err}", file=sys.stderr)
        return 1
    print(f"CA {ca.cert} (its key {ca.key} signs: keep it out of the cluster)\n"
          f"cluster identity {issued.cert}, {issued.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
