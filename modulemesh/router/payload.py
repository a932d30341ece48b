"""The client's request body kept as received, so forwarding it costs no tensor codec work.

Decoding a request into numpy arrays and encoding it again for the module is most of the
router's CPU per request. Most calls do not need that: a step whose inputs are exactly the
client's tensors can get the client's bytes. :class:`ClientInputs` is the request's tensors as
a mapping that decodes on first access (a CEL condition over ``request.inputs``, a renaming
input mapping, a cache key); until then it carries the raw body, and ``inputs is
ctx.inputs`` is how a call knows it may forward those bytes.

:func:`rename_model` is the response side: when the graph's answer is one module's answer,
in the format the client asked for, only ``model_name`` (and the module's
``model_version``) at the head of the JSON part differ from what the router would encode.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson

from modulemesh import oip
from modulemesh.router.errors import RouteError

__all__ = ["ClientInputs", "rename_model"]


class ClientInputs(Mapping[str, np.ndarray[Any, Any]]):
    """The client's input tensors: raw body plus parsed JSON head, arrays built on first use."""

    __slots__ = ("_request", "body", "head", "header_length")

    def __init__(self, body: bytes, header_length: int | None, head: oip.RequestHead) -> None:
        self.body = body
        self.header_length = header_length
        self.head = head
        self._request: oip.InferRequest | None = None

    @classmethod
    def parse(cls, body: bytes, header_length: str | None) -> ClientInputs:
        """Parse the JSON part (``ProtocolError`` when it is malformed); tensors stay raw."""
        head = oip.parse_request(body, header_length)
        length = None if header_length is None or header_length == "" else int(header_length)
        return cls(body, length, head)

    @property
    def decoded(self) -> bool:
        """Whether the arrays were built (for tests and explain, never for routing)."""
        return self._request is not None

    def request(self) -> oip.InferRequest:
        """The decoded request; a malformed tensor is the client's 400, never a module's."""
        if self._request is None:
            try:
                self._request = self.head.decode()
            except oip.ProtocolError as exc:
                raise RouteError(
                    exc.status, f"bad request: {exc.message}", fallback=False
                ) from None
        return self._request

    def problem(self) -> RouteError | None:
        """The client's own 400 when its tensors do not decode, else None.

        Used when a module rejected a forwarded body: the client gets the router's message
        about its request, exactly as if the router had decoded it first.
        """
        try:
            self.request()
        except RouteError as exc:
            return exc
        return None

    def names(self) -> list[str]:
        """Input names without decoding (as listed by the client)."""
        return self.head.input_names()

    def for_module(self) -> tuple[bytes, int | None]:
        """A module request carrying these inputs untouched, asking for all outputs in binary.

        Used when the call's answer goes on to another step: the client's ``outputs``,
        ``id`` and parameters are the graph's business, not the module's. Only the JSON head
        is rewritten; binary tensor bytes are reused as they are.
        """
        head = orjson.dumps(
            {"parameters": {"binary_data_output": True}, "inputs": self.head.header["inputs"]}
        )
        tail = self.head.binary
        if not len(tail):
            return head, None
        return b"".join((head, tail)), len(head)

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        return self.request().inputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.request().inputs)

    def __len__(self) -> int:
        return len(self.request().inputs)


_NAME = b'{"model_name":"'
_VERSION = b',"model_version":"'


def rename_model(body: bytes, header_length: int | None, graph: str) -> tuple[bytes, int | None]:
    """A module's response body as the graph's: ``model_name`` replaced, ``model_version``
    dropped (the graph has none), everything else byte for byte.

    The runtime writes ``model_name`` then ``model_version`` first; a body that does not start
    that way (or has escapes in either string) is decoded and re-encoded instead, so the
    result is the same either way.
    """
    cut = _prefix_end(body)
    if cut < 0:
        response = oip.decode_response(body, header_length)
        response.model_name = graph
        response.model_version = None
        return oip.encode_response(response, _binary_wishes(body, header_length))
    new_head = _NAME[:-1] + orjson.dumps(graph)
    out = b"".join((new_head, memoryview(body)[cut:]))
    if header_length is None:
        return out, None
    return out, header_length - cut + len(new_head)


def _prefix_end(body: bytes) -> int:
    """Index just past ``{"model_name":"…"[,"model_version":"…"]``, or -1."""
    if not body.startswith(_NAME):
        return -1
    end = body.find(b'"', len(_NAME))
    if end < 0 or b"\\" in body[len(_NAME) : end]:
        return -1
    end += 1
    if body.startswith(_VERSION, end):
        close = body.find(b'"', end + len(_VERSION))
        if close < 0 or b"\\" in body[end + len(_VERSION) : close]:
            return -1
        end = close + 1
    return end


def _binary_wishes(body: bytes, header_length: int | None) -> dict[str, bool] | bool:
    """Which outputs the module sent binary (so the re-encoded body keeps the same format)."""
    if header_length is None:
        return False
    header = orjson.loads(memoryview(body)[:header_length])
    wishes: dict[str, bool] = {}
    for out in header.get("outputs") or []:
        params = out.get("parameters") or {}
        wishes[out["name"]] = "binary_data_size" in params
    return wishes
