"""The import boundaries the architecture states, read from every module of the four services.

- Each service's `core/` is pure: no grpc, asyncio, protobuf or `llmserve.runtime` (and no torch
  outside the worker), not even for type hints.
- Only `convert.py` sees both protobuf messages and core types. Any other module that imports a
  service's core (a shell: `server.py`, `worker_link.py`, ...) may import the generated
  `*_pb2_grpc` modules (servicer bases, stubs) and hand messages to `convert`, but imports no
  `*_pb2` message module at run time: it names message types in annotations only (imported under
  `if TYPE_CHECKING:`), so it can neither build a message nor test its class, and it reads no
  field of a message it is handed as a parameter.

A module that does not parse, or whose imports cannot be resolved statically (a relative import
that leaves the tree, `import *`, a dynamic import of a computed name), fails: nothing is skipped.
"""

from __future__ import annotations

import pytest

from tests.contract.import_reading import (
    CORES,
    ROOT,
    SERVICES,
    core_offences,
    read_file,
    service_files,
    shell_offences,
)


# ---- the tree -------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", [*SERVICES, *CORES])
def test_every_service_and_its_core_are_present(folder: str) -> None:
    assert (ROOT / folder / "__init__.py").is_file(), f"{folder} is missing: the boundaries cannot be checked"


def test_every_service_module_parses_and_its_imports_resolve() -> None:
    problems = []
    for path in service_files():
        try:
            module = read_file(path)
        except (SyntaxError, UnicodeDecodeError, ValueError) as err:
            problems.append(f"{path.relative_to(ROOT)}: cannot be read ({err})")
            continue
        problems += [f"{path.relative_to(ROOT)}: {why}" for why in module.unresolved]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("core", CORES)
def test_core_imports_no_wire_or_async_modules(core: str) -> None:
    paths = sorted((ROOT / core).rglob("*.py"))
    assert paths, f"{core} holds no module"
    offenders = [f"{p.relative_to(ROOT)} {why}" for p in paths for why in core_offences(read_file(p), core == "worker_svc/core")]
    assert not offenders, "\n".join(offenders)


def test_only_convert_modules_see_both_protobuf_messages_and_core_types() -> None:
    offenders = []
    for path in service_files():
        parts = path.relative_to(ROOT).parts
        if "core" in parts[1:] or path.name == "convert.py":
            continue
        offenders += [f"{path.relative_to(ROOT)}: {why}" for why in shell_offences(read_file(path))]
    assert not offenders, "move message construction and reading into the service's convert.py:\n" + "\n".join(offenders)
