"""An LRU + TTL result cache keyed by module, model version and the exact input bytes.

Keys hash every input's name, datatype, shape and raw bytes (blake2b), so equal tensors hit
and anything else misses. Whether a request may use the cache at all (tagged data) is the
privacy module's call, not this one's.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ResultCache", "input_digest"]

Tensors = Mapping[str, np.ndarray[Any, Any]]


def input_digest(inputs: Tensors) -> bytes:
    """A digest of the inputs that changes with any name, dtype, shape or value."""
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(inputs):
        array = inputs[name]
        h.update(name.encode())
        h.update(b"\0")
        h.update(array.dtype.str.encode())
        h.update(repr(array.shape).encode())
        if array.dtype.kind == "O":
            for item in array.ravel():
                raw = item if isinstance(item, bytes) else str(item).encode()
                h.update(len(raw).to_bytes(4, "little"))
                h.update(raw)
        else:
            h.update(np.ascontiguousarray(array).tobytes())
    return h.digest()


class ResultCache:
    """Bounded LRU with a time-to-live per entry."""

    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._entries: OrderedDict[tuple[str, str, bytes], tuple[float, Tensors]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, module: str, version: str, digest: bytes) -> Tensors | None:
        """The cached outputs, or None (expired entries are dropped)."""
        key = (module, version, digest)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, outputs = entry
        if expires < time.monotonic():
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return outputs

    def put(self, module: str, version: str, digest: bytes, outputs: Tensors) -> None:
        """Store outputs, evicting the least recently used entry when full."""
        key = (module, version, digest)
        self._entries[key] = (time.monotonic() + self.ttl, outputs)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
