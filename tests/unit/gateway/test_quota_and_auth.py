"""Per-tenant quotas (running requests, tokens per sliding minute, retry-after) and API keys (plain
and sha256 entries, the tenant from the key, malformed files), on a fake clock."""

from __future__ import annotations

import hashlib

import pytest

from gateway.core.auth import KeyBook, check_claimed_tenant
from gateway.core.quota import Quota, QuotaBook
from llmserve.errors import CapacityError, PermissionDeniedError, UnauthenticatedError


def test_concurrency_quota_is_per_tenant() -> None:
    book = QuotaBook(Quota(max_concurrent=2))
    book.admit("a", 10, now=0.0)
    book.admit("a", 10, now=0.0)
    with pytest.raises(CapacityError, match="tenant 'a' has 2 requests running, its limit is 2") as refused:
        book.admit("a", 10, now=0.0)
    assert refused.value.retry_after_s == 1.0
    book.admit("b", 10, now=0.0)
    book.finish("a", 5, now=1.0)
    book.admit("a", 10, now=1.0)


def test_tokens_per_minute_slide_and_say_when_to_retry() -> None:
    book = QuotaBook(Quota(tokens_per_minute=100))
    book.admit("a", 30, now=0.0)
    book.finish("a", 30, now=10.0)  # 60 in the window
    book.admit("a", 30, now=20.0)   # 90
    with pytest.raises(CapacityError, match="used 90 of its 100 tokens per minute") as refused:
        book.admit("a", 20, now=30.0)
    assert refused.value.retry_after_s == pytest.approx(30.0)  # the first 30 tokens expire at t=60
    book.admit("a", 20, now=60.0)
    with pytest.raises(CapacityError, match="send a shorter prompt") as too_big:
        book.admit("b", 101, now=0.0)
    assert too_big.value.retry_after_s is None  # retrying cannot help
    assert "b" not in book.tenants  # a refused tenant holds nothing


def test_unlimited_quota_keeps_no_state() -> None:
    book = QuotaBook(Quota())
    for _ in range(1000):
        book.admit("a", 10**6, now=0.0)
    assert not book.tenants


def test_keys_name_their_tenant() -> None:
    digest = hashlib.sha256(b"b-secret-key-0123456").hexdigest()
    book = KeyBook.parse(f"# comment\n\nacme a-secret-key-0123456\nbeta sha256:{digest}  # hashed\n")
    assert book.tenant_for("Bearer a-secret-key-0123456") == "acme"
    assert book.tenant_for("bearer b-secret-key-0123456") == "beta"
    for value, message in ((None, "needs an API key"), ("", "needs an API key"), ("Basic xyz", "Bearer <key>"),
                           ("Bearer wrong-key-0123456789", "not valid")):
        with pytest.raises(UnauthenticatedError, match=message):
            book.tenant_for(value)
    check_claimed_tenant("", "acme")
    check_claimed_tenant("acme", "acme")
    with pytest.raises(PermissionDeniedError, match="belongs to tenant 'acme', not 'beta'"):
        check_claimed_tenant("beta", "acme")


@pytest.mark.parametrize(("text", "message"), [
    ("acme", "expected `TENANT KEY`"),
    ("acme short", "at least 16 characters"),
    ("ac\x1bme a-secret-key-0123456", "tenant"),
    ("acme sha256:abc", "64 hex digits"),
    ("a a-secret-key-0123456\nb a-secret-key-0123456", "already listed"),
    ("# only comments\n", "lists no keys"),
])
def test_a_malformed_keys_file_names_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyBook.parse(text, "keys.txt")
