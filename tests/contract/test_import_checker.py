"""The import-boundary checker itself (`import_reading.py`): each rule of
`test_import_boundaries.py` catches what it states, on small sources."""

from __future__ import annotations

import textwrap

from tests.contract.import_reading import core_offences, read_module, shell_offences


def _shell(source: str, name: str = "worker_svc.server") -> list[str]:
    return shell_offences(read_module(textwrap.dedent(source), name))


def test_checker_flags_a_shell_that_imports_messages_and_core_at_run_time() -> None:
    assert _shell("""
        from llmserve.v1 import worker_pb2, worker_pb2_grpc
        from worker_svc.core.types import BatchPlan
    """) == ["imports llmserve.v1.worker_pb2 at run time"]
    # A relative import of the core counts as the core; stubs and convert alone are fine.
    assert _shell("from llmserve.v1 import worker_pb2\nfrom .core import types\n")
    assert _shell("from __future__ import annotations\nfrom llmserve.v1 import worker_pb2_grpc\nfrom worker_svc import convert\n"
                  "from worker_svc.core.types import BatchPlan\n") == []
    # A module that sees no core may use messages (clients of other services).
    assert _shell("from llmserve.v1 import kvstore_pb2\nx = kvstore_pb2.ApplyRequest()\n") == []


def test_checker_lets_shells_name_messages_in_annotations_only() -> None:
    ok = """
        from __future__ import annotations
        from typing import TYPE_CHECKING
        from worker_svc import convert
        from worker_svc.core.types import BatchPlan
        if TYPE_CHECKING:
            from llmserve.v1 import worker_pb2
            Alias = list[worker_pb2.BatchPlan]

        async def Execute(self, plans: Alias, context: object) -> worker_pb2.StepResult:
            queue: list[worker_pb2.BatchPlan] = []
            return convert.step(plans)
    """
    assert _shell(ok) == []
    built = ok.replace("return convert.step(plans)", "return worker_pb2.StepResult(step_id=1)")
    assert _shell(built) == ["line 12: uses worker_pb2 outside an annotation"]
    assert _shell(ok.replace("from __future__ import annotations", "import typing")) == [
        "names message types in annotations without `from __future__ import annotations`"]


def test_checker_flags_a_shell_reading_a_message_parameter() -> None:
    source = """
        from __future__ import annotations
        from typing import TYPE_CHECKING
        from worker_svc.core.types import BatchPlan
        if TYPE_CHECKING:
            from llmserve.v1 import worker_pb2

        def run(plan_pb: worker_pb2.BatchPlan) -> int:
            return plan_pb.step_id
    """
    assert _shell(source) == ["line 9: reads plan_pb.step_id (read it in convert.py)"]


def test_checker_flags_what_it_cannot_resolve() -> None:
    assert read_module("from llmserve import v1\n", "gateway.server").unresolved
    assert read_module("from llmserve.v1 import *\n", "gateway.server").unresolved
    assert read_module("import importlib\nimportlib.import_module(name)\n", "gateway.server").unresolved
    assert read_module("from ... import x\n", "gateway.server").unresolved
    # A registry of literal module names resolves to those modules (the policy factory).
    registry = read_module("import importlib\nM = ('scheduler_svc.core.policy.fcfs',)\nimportlib.import_module(M[0])\n",
                           "scheduler_svc.core.policy", is_package=True)
    assert not registry.unresolved and "scheduler_svc.core.policy.fcfs" in registry.runtime


def test_checker_flags_wire_imports_in_a_core_even_for_type_hints() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import grpc\nfrom .. import convert\n"
    module = read_module(source, "kvstore_svc.core.store")
    assert core_offences(module, worker=False) == ["imports grpc"]
    assert "kvstore_svc.convert" in module.runtime
    assert core_offences(read_module("import torch\n", "kvstore_svc.core.x"), worker=False) == ["imports torch"]
    assert core_offences(read_module("import torch\n", "worker_svc.core.x"), worker=True) == []
