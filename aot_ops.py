"""The custom ops a saved model uses (``numbagrad.library``): the file records each one with the
module that defined it and a fingerprint of its definition, and ``numbagrad.load`` checks them
before it rebuilds any graph, so that an op the loading process has not imported is named with
its module, and a definition that changed since the save is refused unless the caller allows
it. The op itself (its template is code) always comes from the loading process's registry,
never from the file. Files that use no custom op carry no record (and load as before)."""

from __future__ import annotations

from typing import Any

from .graph import Graph
from .graph.untrusted import describe, fields, refuse, string, word
from .library import defined

KEY = "custom_ops"


def used_ops(*graphs: Graph) -> set[str]:
    """Every op the graphs run, the steps of fused nodes included."""
    names = set()
    for graph in graphs:
        for node in graph.ops():
            names.add(node.op)
            names.update(step[0] for step in node.attrs.get("body", ()))
    return names


def records(*graphs: Graph) -> dict[str, dict[str, str]]:
    """``{op: {"module": ..., "fingerprint": ...}}`` for the custom ops the graphs use."""
    result = {}
    for name in sorted(used_ops(*graphs)):
        definition = defined(name)
        if definition is not None:
            result[name] = {"module": definition.module, "fingerprint": definition.fingerprint()}
    return result


def check_records(meta: dict, allow_changed: bool) -> set[str]:
    """The names of the custom ops the file records, each registered here with the saved
    definition (or, with ``allow_changed``, any definition)."""
    if KEY not in meta:
        return set()
    if not isinstance(meta[KEY], dict):
        refuse(f"metadata {KEY}", "expected a JSON object of custom ops")
    for name, record in meta[KEY].items():
        where = f"metadata {KEY} {describe(name)}"
        record = fields(record, ("module", "fingerprint"), where)
        module = word(string(record["module"], f"{where} module"))
        saved = string(record["fingerprint"], f"{where} fingerprint")
        definition = defined(string(name, f"metadata {KEY}"))
        op = f"custom op {describe(name)}"
        if definition is None:
            refuse(
                op,
                f"the saved model uses it, and it is defined in module {module}, which this "
                f"process has not imported: import {module} before numbagrad.load",
            )
        if definition.fingerprint() != saved and not allow_changed:
            refuse(
                op,
                f"its definition (module {module}) has changed since the model was saved "
                f"({describe(saved)} then, {definition.fingerprint()} now): pass "
                "allow_changed_ops=True to numbagrad.load to run it as it is defined now",
            )
    return set(meta[KEY])


def check_recorded(recorded: set[str], *graphs: Graph) -> None:
    """Refuse graphs that use a custom op the file does not record."""
    for name in sorted(used_ops(*graphs)):
        if defined(name) is not None and name not in recorded:
            refuse(
                f"custom op {describe(name)}", "the graphs use it, but the file has no record of it"
            )


def optional_keys(meta: dict[str, Any]) -> tuple[str, ...]:
    """The metadata keys a file may have or not."""
    return (KEY,) if KEY in meta else ()
