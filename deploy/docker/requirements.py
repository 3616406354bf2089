"""Prints the requirements of llmserve's base and the given extras (comma-separated, as in
`pip install .[gateway]`), one per line, for an image's dependency layer (`pip install -r`):

    python requirements.py gateway > requirements.txt

Read from pyproject.toml in the working directory; an extra that names others
(`all = ["llmserve[gateway,...]"]`) is expanded. An unknown extra is an error, not an empty list.
"""

from __future__ import annotations

import re
import sys
import tomllib

_SELF = re.compile(r"^llmserve\[(?P<extras>[^\]]+)\]$")


def requirements(project: dict, extras: list[str]) -> list[str]:
    optional = project["optional-dependencies"]
    out = list(project["dependencies"])
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"requirements.py: no extra {extra!r} (have: {', '.join(optional)})")
        seen.add(extra)
        for requirement in optional[extra]:
            nested = _SELF.match(requirement.replace(" ", ""))
            if nested:
                todo.extend(nested["extras"].split(","))
            elif requirement not in out:
                out.append(requirement)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    with open("pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    print("\n".join(requirements(project, [e.strip() for e in argv[0].split(",") if e.strip()])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
