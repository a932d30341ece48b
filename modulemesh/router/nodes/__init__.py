"""One handler per node type: ``async def run(executor, node, ctx, inputs) -> Output``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modulemesh.router.nodes import cascade, ensemble, select, sequence, split, switch, validate

if TYPE_CHECKING:
    from modulemesh.router.executor import Handler

HANDLERS: dict[str, Handler] = {
    "sequence": sequence.run,
    "ensemble": ensemble.run,
    "switch": switch.run,
    "split": split.run,
    "cascade": cascade.run,
    "select": select.run,
    "validate": validate.run,
}

__all__ = ["HANDLERS", "Any"]
