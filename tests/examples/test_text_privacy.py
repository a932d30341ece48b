"""The text-privacy example runs as its comments say: ``modulemesh run`` serves it, the shown
``curl`` gets the address redacted (the model echoes ``<EMAIL>``) and a noisy word count; a
card number is refused with 403, a phone number goes to the cleared module; the fifth noisy
answer of a tenant is refused with 429 (budget 2, 0.5 per answer); and the counts the router
reports in ``/envelopes`` are what the operator's feed adds up into the gates' status."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from localmesh.test_run import Run

from modulemesh.localmesh.plan import free_port
from modulemesh.operator.gate_status import ComplianceBook

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "text-privacy.yaml"


def shown_commands() -> list[str]:
    """The backquoted commands with arguments in the example's comments, in order."""
    text = "\n".join(line[2:] for line in EXAMPLE.read_text().splitlines() if line.startswith("# "))
    found = re.findall(r"`((?:modulemesh|curl) [^`]+)`", text)
    return [c for c in found if len(c.split()) > 2 and "models build" not in c]


def text_request(url: str, text: str, tenant: str = "acme") -> httpx.Response:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}
    headers = {"x-tenant": tenant, "x-modulemesh-explain": "1"}
    return httpx.post(url, json=body, headers=headers, timeout=30)


def outputs(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == 200, body
    return {o["name"]: o["data"] for o in body["outputs"]}


@contextlib.contextmanager
def running_example(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """``modulemesh run examples/text-privacy.yaml`` from a copy in ``tmp`` (its budget ledger
    under ``tmp/xdg``); yields the router's port once it is ready, stops the run after."""
    examples = tmp / "examples"
    examples.mkdir()
    for name in ("text-privacy.yaml", "build_models.py"):
        shutil.copy(ROOT / "examples" / name, examples)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp / "xdg"))
    port = free_port()
    run = Run(["examples/text-privacy.yaml", "--port", str(port), "--quiet"], tmp)
    try:
        run.wait_line("ready:", timeout=120)
        yield port
    finally:
        if run.popen.poll() is None:
            run.popen.terminate()
            run.popen.wait(30)


def test_text_privacy_example_runs_as_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = shown_commands()
    assert commands[0] == "modulemesh run examples/text-privacy.yaml"
    with running_example(tmp_path, monkeypatch) as port:
        url = f"http://127.0.0.1:{port}/v2/models/text-privacy/infer"
        # The curl shown in the example, against this run's port.
        curl = shlex.split(commands[1].replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
        done = subprocess.run(curl, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        first = json.loads(done.stdout)
        echo = next(o for o in first["outputs"] if o["name"] == "echo")["data"]
        count = next(o for o in first["outputs"] if o["name"] == "word_count")["data"][0]
        assert echo == ["write to <EMAIL>"]
        assert count != 3.0  # Laplace noise (scale 2) is continuous: never exactly zero
        path = first["parameters"]["modulemesh_explain"]["path"]
        assert any(e["event"] == "content" and e["redacted"] == {"email": 1} for e in path)
        assert any(e["event"] == "budget" and e["spentEpsilon"] == 0.5 for e in path)

        refused = text_request(url, "card 4111 1111 1111 1111 please")
        assert refused.status_code == 403
        assert "payment" in refused.json()["error"] and "4111" not in refused.text

        phoned = text_request(url, "call me on +44 20 7946 0958")
        outputs(phoned)
        calls = [e for e in phoned.json()["parameters"]["modulemesh_explain"]["path"]
                 if e["event"] == "call"]  # fmt: skip
        assert [c["module"] for c in calls] == ["stats-cleared"]

        for _ in range(2):  # answers 3 and 4 of a budget of 2 / 0.5
            outputs(text_request(url, "a plain sentence"))
        exhausted = text_request(url, "a plain sentence")
        assert exhausted.status_code == 429
        assert exhausted.json()["budget"]["remaining"]["epsilon"] == 0
        assert outputs(text_request(url, "other tenant", tenant="globex"))

        # The counts shown at /envelopes (the curl shown), added up as the operator does.
        assert commands[2] == "curl -s http://127.0.0.1:8080/envelopes"
        shown = shlex.split(commands[2].replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
        done = subprocess.run(shown, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        payload = json.loads(done.stdout)
        book = ComplianceBook()
        book.record("default", "text-privacy", payload)
        pii = book.gate_status("default", "pii", ["text-privacy"])
        assert pii is not None
        assert pii["detectorHits"] == {
            "email/email": 1, "payment/payment-card": 1, "phone/phone": 1,
        }  # fmt: skip
        # Denials: the card request, and `stats` refused the phone request (which then went
        # to its cleared fallback).
        assert (pii["hits"], pii["redactions"], pii["denials"]) == (3, 1, 2)
        counts = book.gate_status("default", "word-counts", ["text-privacy"])
        assert counts is not None
        assert (counts["dpAnswers"], counts["dpRefusals"]) == (5, 1)
        assert counts["budget"]["principals"] == 2
        assert counts["budget"]["spentEpsilon"] == pytest.approx(2.5)
        assert counts["budgetUsed"] == "2/2"
    # The ledger outlives the run, under $XDG_STATE_HOME.
    ledger = tmp_path / "xdg" / "modulemesh" / "text-privacy.dp-ledger.json"
    kept = json.loads(ledger.read_text())
    assert kept["accounts"]["default/word-counts/acme"]["epsilon"] == pytest.approx(2.0)
