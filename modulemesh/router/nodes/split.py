"""``split``: weighted arms for canary / A-B, optionally sticky by a header, with an optional
mirror share whose result is discarded (the mirror never delays or fails the request)."""

from __future__ import annotations

import hashlib
import logging
import random
from typing import TYPE_CHECKING

from modulemesh.api.graph import SplitNode
from modulemesh.router.context import Output, RequestContext, Tensors
from modulemesh.router.errors import RouteError

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor

_log = logging.getLogger("modulemesh.router")


def choose(node: SplitNode, sticky_value: str | None) -> int:
    """Index of the arm for this request: by weight, hashed from the sticky value if any."""
    total = sum(arm.weight for arm in node.targets)
    if total <= 0:
        raise RouteError(503, f"split {node.name!r}: every arm has weight 0", node=node.name)
    if sticky_value is not None:
        digest = hashlib.blake2b(sticky_value.encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") % total
    else:
        point = random.randrange(total)
    for index, arm in enumerate(node.targets):
        if point < arm.weight:
            return index
        point -= arm.weight
    return len(node.targets) - 1  # unreachable: point < total


async def run(
    ex: Executor, node: SplitNode, ctx: RequestContext, inputs: Tensors, final: bool
) -> Output:
    """Route to one arm; maybe mirror a copy."""
    sticky = None
    if node.sticky_header is not None:
        sticky = ctx.headers.get(node.sticky_header.lower())
    index = choose(node, sticky)
    arm = node.targets[index]
    ctx.note("decision", node=node.name, arm=index, target=arm.ref, sticky=sticky is not None)
    mirror = node.mirror
    if mirror is not None and random.random() * 100.0 < mirror.percent:
        ctx.note("mirror", node=node.name, target=mirror.ref)
        ex.spawn(_mirror(ex, node, ctx, inputs))
    return await ex.call(arm, ctx, inputs, node=node.name, step=f"targets[{index}]", final=final)


async def _mirror(ex: Executor, node: SplitNode, ctx: RequestContext, inputs: Tensors) -> None:
    assert node.mirror is not None
    try:
        await ex.call(node.mirror, ctx, inputs, node=node.name, step="mirror")
    except RouteError as exc:
        _log.info("mirror of split %r failed (discarded): %s", node.name, exc)
