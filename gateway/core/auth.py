"""API keys per tenant. Pure: the shell reads the file and hands over its text and each call's
`authorization` value.

The keys file has one `TENANT KEY` per line (`#` starts a comment). KEY is the key itself or
`sha256:` and the hex digest of it, so the file need not hold usable secrets. Keys are compared
by their SHA-256 digests with `hmac.compare_digest`; the tenant of a call is the one its key names,
never what the request says.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from llmserve.errors import PermissionDeniedError, UnauthenticatedError

_TENANT = re.compile(r"[A-Za-z0-9._:@/+\-]{1,256}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
BEARER = "bearer "


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class KeyBook:
    """SHA-256 digest of each key -> its tenant."""

    tenant_of_digest: Mapping[bytes, str]

    @classmethod
    def parse(cls, text: str, source: str = "the keys file") -> KeyBook:
        """Raises ValueError naming the line of a malformed entry, a bad tenant or a repeated key."""
        book: dict[bytes, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{source}:{number}: expected `TENANT KEY`, got {len(parts)} fields")
            tenant, key = parts
            if not _TENANT.fullmatch(tenant):
                raise ValueError(f"{source}:{number}: tenant {tenant[:32]!r} must be 1-256 letters, digits "
                                 "or . _ : @ / + -")
            if key.startswith("sha256:"):
                if not _HEX_DIGEST.fullmatch(key[7:]):
                    raise ValueError(f"{source}:{number}: sha256: must be followed by 64 hex digits")
                digest = bytes.fromhex(key[7:])
            else:
                if len(key) < 16:
                    raise ValueError(f"{source}:{number}: a key must be at least 16 characters long")
                digest = _digest(key)
            if digest in book:
                raise ValueError(f"{source}:{number}: this key is already listed (for tenant {book[digest]!r})")
            book[digest] = tenant
        if not book:
            raise ValueError(f"{source} lists no keys: add `TENANT KEY` lines, or unset --api-keys-file")
        return cls(book)

    def tenant_for(self, authorization: str | None) -> str:
        """The tenant of an `authorization: Bearer KEY` value; UnauthenticatedError otherwise."""
        if not authorization:
            raise UnauthenticatedError("this gateway needs an API key: send `authorization: Bearer <key>`")
        if not authorization[: len(BEARER)].lower() == BEARER:
            raise UnauthenticatedError("the authorization value must be `Bearer <key>`")
        digest = _digest(authorization[len(BEARER):].strip())
        for known, tenant in self.tenant_of_digest.items():
            if hmac.compare_digest(known, digest):
                return tenant
        raise UnauthenticatedError("the API key is not valid")


def check_claimed_tenant(claimed: str, tenant: str) -> None:
    """A request that names a tenant must name its key's own (an empty one takes the key's)."""
    if claimed and claimed != tenant:
        raise PermissionDeniedError(f"the API key belongs to tenant {tenant!r}, not {claimed[:64]!r}: "
                                    "leave `tenant` empty or send your own")


