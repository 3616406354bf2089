"""Every domain error in the tree gets its intended status through the one table, and a client's
`error_for_status` is that table's inverse.

The expected codes are written out here, one line per class, so a new error class (anywhere in
the tree: it is found by reading the sources) fails this test until someone decides its status.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import grpc
import pytest

from kvstore_svc.core import errors as kv
from llmserve import errors as shared
from llmserve.runtime.errors import STATUS_OF_ERROR, error_for_status, status_code_for
from scheduler_svc.core import errors as sched

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("llmserve", "gateway", "scheduler_svc", "worker_svc", "kvstore_svc")
Code = grpc.StatusCode

INTENDED: dict[type[shared.LlmServeError], grpc.StatusCode] = {
    shared.LlmServeError: Code.INTERNAL,
    shared.InvalidRequestError: Code.INVALID_ARGUMENT,
    shared.CapacityError: Code.RESOURCE_EXHAUSTED,
    shared.NotFoundError: Code.NOT_FOUND,
    shared.UnavailableError: Code.UNAVAILABLE,
    shared.ConflictError: Code.ALREADY_EXISTS,
    shared.PreconditionError: Code.FAILED_PRECONDITION,
    shared.UnauthenticatedError: Code.UNAUTHENTICATED,
    shared.PermissionDeniedError: Code.PERMISSION_DENIED,
    kv.KvStoreError: Code.INTERNAL,  # a base only: the core raises its subclasses
    kv.InvalidSpecError: Code.INVALID_ARGUMENT,
    kv.CheckpointMismatchError: Code.INVALID_ARGUMENT,
    kv.UnknownWorkerError: Code.NOT_FOUND,
    kv.UnknownCheckpointError: Code.NOT_FOUND,
    kv.GeometryConflictError: Code.ALREADY_EXISTS,
    kv.PoolLiveError: Code.FAILED_PRECONDITION,
    kv.SyncOrderError: Code.FAILED_PRECONDITION,
    kv.OutOfBlocksError: Code.RESOURCE_EXHAUSTED,
    kv.HostTierFullError: Code.RESOURCE_EXHAUSTED,
    sched.TtftInfeasibleError: Code.RESOURCE_EXHAUSTED,
}


def _modules_defining_domain_errors() -> set[str]:
    """Modules of the tree with a class that derives (by its bases' names, transitively) from
    LlmServeError. Read from the sources, so a module nothing imports is still found."""
    classes: list[tuple[str, str, set[str]]] = []  # (module, class, base names)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "v1" in path.relative_to(ROOT).parts:
                continue  # generated stubs
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ClassDef):
                    bases = {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases if isinstance(b, (ast.Name, ast.Attribute))}
                    classes.append((module, node.name, bases))
    family, grew = {"LlmServeError"}, True
    while grew:
        grew = False
        for _, name, bases in classes:
            if name not in family and bases & family:
                family.add(name)
                grew = True
    return {module for module, name, _ in classes if name in family}


def _all_subclasses(cls: type) -> set[type]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _all_subclasses(sub)
    return found


def test_every_domain_error_in_the_tree_maps_to_its_intended_status() -> None:
    modules = _modules_defining_domain_errors()
    assert {"llmserve.errors", "kvstore_svc.core.errors"} <= modules, modules
    for module in sorted(modules):
        importlib.import_module(module)
    in_tree = {cls for cls in _all_subclasses(shared.LlmServeError) if not cls.__module__.startswith("tests.")}
    assert in_tree == set(INTENDED), f"decide the status of: {sorted(c.__name__ for c in in_tree ^ set(INTENDED))}"
    wrong = {}
    for cls, code in INTENDED.items():
        if cls is kv.OutOfBlocksError:
            error = cls("m", requested=1, free=0)
        elif cls is sched.TtftInfeasibleError:
            error = cls(3.4, 1.0)
        else:
            error = cls("m")
        if status_code_for(error) != code:
            wrong[cls.__name__] = (status_code_for(error), code)
    assert not wrong, wrong


def test_store_errors_are_both_store_errors_and_shared_errors_with_their_attributes() -> None:
    error = kv.OutOfBlocksError("4 blocks asked, 3 free", requested=4, free=3)
    assert isinstance(error, kv.KvStoreError) and isinstance(error, shared.CapacityError)
    assert (error.requested, error.free, str(error)) == (4, 3, "4 blocks asked, 3 free")
    assert isinstance(kv.CheckpointMismatchError("m"), shared.InvalidRequestError)


def test_the_table_names_each_code_once_so_that_it_can_be_inverted() -> None:
    codes = list(STATUS_OF_ERROR.values())
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls, code", list(STATUS_OF_ERROR.items()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_error_for_status_inverts_the_table(cls: type[shared.LlmServeError], code: grpc.StatusCode) -> None:
    error = error_for_status(code, "what to do")
    assert type(error) is cls and str(error) == "what to do" and status_code_for(error) == code


@pytest.mark.parametrize(
    "code, expected",
    [
        # The peer stopped (or did not answer) mid-call: the caller may retry.
        (Code.CANCELLED, shared.UnavailableError),
        (Code.DEADLINE_EXCEEDED, shared.UnavailableError),
        # Codes no domain error has are a failure of the peer: INTERNAL when relayed.
        (Code.UNKNOWN, shared.LlmServeError),
        (Code.UNIMPLEMENTED, shared.LlmServeError),
    ],
)
def test_error_for_status_of_codes_outside_the_table(code: grpc.StatusCode, expected: type) -> None:
    assert type(error_for_status(code, "m")) is expected


def test_status_code_for_refuses_what_is_not_a_domain_error() -> None:
    with pytest.raises(TypeError):
        status_code_for(ValueError("a bug"))  # type: ignore[arg-type]
