"""Every ``make <target>`` the README and the notebooks tell a user to type exists."""

from __future__ import annotations

import json
import re

from tiny_project import REPO_ROOT

# `make run` in running text, and `make run ...` at the start of a line of a
# fenced code block (prose such as "make each view" is neither).
INLINE = re.compile(r"`make ([\w-]+)")
COMMAND = re.compile(r"^\s*(?:\$\s*)?make ([\w-]+)")
# A rule's target at the start of a line; `NAME :=` and `NAME ?=` are variables.
RULE = re.compile(r"^([\w-]+)\s*:(?!=)", re.MULTILINE)


def named_targets(text: str) -> set[str]:
    targets = set(INLINE.findall(text))
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and (match := COMMAND.match(line)):
            targets.add(match.group(1))
    return targets


def documents() -> dict[str, str]:
    docs = {"README.md": (REPO_ROOT / "README.md").read_text()}
    for notebook in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        docs[notebook.name] = "\n".join("".join(cell["source"]) for cell in cells)
    return docs


def test_named_targets_reads_commands_not_prose():
    text = "Run `make run` first.\nWe make each view.\n```\nmake test  # all\n```\n"
    assert named_targets(text) == {"run", "test"}


def test_every_make_target_named_in_the_docs_exists():
    defined = set(RULE.findall((REPO_ROOT / "Makefile").read_text()))
    missing = {
        name: sorted(named_targets(text) - defined)
        for name, text in documents().items()
        if named_targets(text) - defined
    }
    assert missing == {}
