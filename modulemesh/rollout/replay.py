"""Replay a capture (``spec.capture``'s JSON lines) against a graph and measure how its answers
differ from the captured ones, per module (the module that produced the captured answer) and
output: how many compared, the largest absolute difference, and the share that agree (same
argmax per row, or within ``atol`` for outputs of one value per row). Models are deterministic,
so a graph with the same models answers the same bits: every difference is the models'.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from modulemesh import oip
from modulemesh.api.graph import Agreement
from modulemesh.rollout.capture import FORMAT
from modulemesh.rollout.outputs import agree, max_abs_error

__all__ = ["CaptureError", "OutputDiff", "Report", "read_capture", "replay"]


class CaptureError(ValueError):
    """The capture file cannot be read; the message names the file and line."""


@dataclass
class OutputDiff:
    """One (module, output) pair's differences over the replayed requests."""

    compared: int = 0
    agreed: int = 0
    max_abs_error: float = 0.0
    mismatched: int = 0
    """Answers whose output was missing or of another shape or type."""

    def add(self, captured: np.ndarray[Any, Any], answered: np.ndarray[Any, Any] | None,
            atol: float) -> None:  # fmt: skip
        """One request's output, captured and answered again."""
        self.compared += 1
        error = None if answered is None else max_abs_error(captured, answered)
        if error is None or answered is None:
            self.mismatched += 1
            self.max_abs_error = float("inf")
            return
        self.max_abs_error = max(self.max_abs_error, error)
        self.agreed += agree({"o": captured}, {"o": answered}, Agreement.ARGMAX, atol)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "compared": self.compared,
            "maxAbsError": self.max_abs_error,
            "agreement": self.agreed / self.compared if self.compared else None,
            "mismatched": self.mismatched,
        }


@dataclass
class Report:
    """What a replay found."""

    target: str
    requests: int = 0
    failed: list[str] = field(default_factory=list)
    outputs: dict[tuple[str, str], OutputDiff] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        """Every request answered and every output the same to the bit."""
        return not self.failed and all(
            d.max_abs_error == 0.0 and d.mismatched == 0 for d in self.outputs.values()
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``--json``)."""
        return {
            "target": self.target,
            "requests": self.requests,
            "failed": len(self.failed),
            "failures": self.failed[:10],
            "outputs": [
                {"module": m, "output": o, **d.as_dict()}
                for (m, o), d in sorted(self.outputs.items())
            ],
        }

    def lines(self) -> list[str]:
        """The table ``modulemesh replay`` prints."""
        out = [f"replayed {self.requests} request(s) against {self.target}: "
               f"{self.requests - len(self.failed)} answered, {len(self.failed)} failed"]  # fmt: skip
        out.append(f"{'MODULE':<20} {'OUTPUT':<20} {'COMPARED':>8} {'MAX ABS ERROR':>14} "
                   f"{'AGREEMENT':>9}")  # fmt: skip
        for (module, output), d in sorted(self.outputs.items()):
            share = f"{d.agreed / d.compared:.4f}" if d.compared else "-"
            out.append(f"{module:<20} {output:<20} {d.compared:>8} {d.max_abs_error:>14.6g} "
                       f"{share:>9}")  # fmt: skip
        out += [f"failed: {f}" for f in self.failed[:10]]
        return out


def read_capture(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a capture file, in order; :class:`CaptureError` names a bad line."""
    try:
        data = Path(path).read_bytes()  # bounded by the capture's maxBytes
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CaptureError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CaptureError(f"{path}:{number}: not a capture record (format {FORMAT})")
        for key in ("request", "outputs", "module"):
            if key not in record:
                raise CaptureError(f"{path}:{number}: record has no {key!r}")
        yield record


def _outputs(described: list[dict[str, Any]], where: str) -> dict[str, np.ndarray[Any, Any]]:
    body = orjson.dumps({"model_name": "capture", "outputs": described})
    try:
        return dict(oip.decode_response(body).outputs)
    except oip.ProtocolError as exc:
        raise CaptureError(f"{where}: {exc.message}") from None


def replay(path: str | Path, target: str, *, atol: float = 1e-6, timeout: float = 30.0) -> Report:
    """Send every captured request to ``target`` (a graph's infer URL) and compare answers."""
    report = Report(target)
    with httpx.Client(timeout=timeout) as client:
        for number, record in enumerate(read_capture(path), 1):
            report.requests += 1
            where = f"{path} record {number}"
            captured = _outputs(record["outputs"], where)
            try:
                response = client.post(
                    target, content=json.dumps(record["request"]),
                    headers={"content-type": "application/json"},
                )  # fmt: skip
            except httpx.HTTPError as exc:
                report.failed.append(f"{where}: {exc!r}")
                continue
            if response.status_code != 200:
                report.failed.append(f"{where}: HTTP {response.status_code}: {response.text[:200]}")
                continue
            length = response.headers.get(oip.HEADER_LENGTH)
            try:
                answered = oip.decode_response(response.content, length).outputs
            except oip.ProtocolError as exc:
                report.failed.append(f"{where}: bad answer: {exc.message}")
                continue
            for name, array in captured.items():
                diff = report.outputs.setdefault((record["module"], name), OutputDiff())
                diff.add(array, answered.get(name), atol)
    return report
