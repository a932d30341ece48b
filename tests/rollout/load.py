"""Steady load for rollout tests: concurrent clients sending requests back to back, each
status kept, so a test can say that not one request failed while a rollout walked its steps."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass
class Load:
    """Clients sending requests back to back, each with random inputs, until stopped."""

    url: str
    width: int = 8
    """Features of the ``input`` tensor."""
    workers: int = 4
    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for seed in range(self.workers):
            thread = threading.Thread(target=self._run, args=(seed,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                data = rng.normal(0.0, 1.0, self.width).astype(np.float32).tolist()
                body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, self.width],
                                    "data": data}]}  # fmt: skip
                try:
                    response = client.post(self.url, json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.statuses.append(response.status_code)
                if response.status_code != 200:
                    self.failures.append(response.text)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(35)
