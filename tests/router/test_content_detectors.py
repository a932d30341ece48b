"""Content detectors at the router, over real processes: a request carrying an email address
in a BYTES input and no tags header is tagged by its content, so it never reaches a module not
cleared for the tag (it goes to the cleared fallback, or is refused without one); a ``deny``
tag refuses it with a 403 naming the tag and detector but not the address; a ``redact`` tag
replaces the address before any module sees it, which the text module (an ONNX Identity over
strings) shows by echoing what it received. Every decision leaves an audit record without the
payload."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto
from otlp_receiver import OtlpReceiver

from modulemesh import oip, zoo

from .conftest import Pool, Router, make_gate, make_graph, router, start_pool

ADDRESS = "jane.doe@example.org"
TEXT = f"please write to {ADDRESS} about my order"
EMAIL = [{"type": "content", "detector": "email"}]


def _text_model() -> Any:
    return zoo.identity(elem_type=TensorProto.STRING, width=1)


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """Two echoing text modules: ``plain`` (no clearance) and ``cleared`` (pii)."""
    pool = start_pool(
        tmp_path_factory.mktemp("texts"),
        {"plain": (_text_model, {}), "cleared": (_text_model, {"clearance": ["pii"]})},
    )
    yield pool
    pool.mesh.stop()


@contextlib.contextmanager
def gated(
    pool: Pool, tmp: Path, name: str, tag: dict[str, Any], *, fallback: bool = True
) -> Iterator[Router]:
    """A router whose graph calls ``plain`` (falling back to ``cleared`` when asked) under one
    gate with the one ``tag``."""
    modules = [pool.spec("plain", **({"fallback": "cleared"} if fallback else {})),
               pool.spec("cleared", clearance=["pii"])]  # fmt: skip
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "plain"}]}]
    graph = make_graph(name, modules, nodes, gates=[name])
    with router(tmp, graph, pool.urls, [make_gate(name, [tag])]) as r:
        yield r


def send(r: Router, text: str, *, binary: bool = False, **headers: str) -> httpx.Response:
    """POST one string as the BYTES ``input`` [1, 1], with explain on and no tags header."""
    body, length = oip.encode_request(
        {"input": np.array([[text.encode()]], dtype=object)}, binary=binary
    )
    h = {"content-type": "application/json", "x-modulemesh-explain": "1", **headers}
    if length is not None:
        h[oip.HEADER_LENGTH] = str(length)
    return httpx.post(r.infer_url, content=body, headers=h, timeout=30)


def echoed(response: httpx.Response) -> str:
    """The string the module echoed back (what it received)."""
    body = response.json()
    assert response.status_code == 200, body
    data = body["outputs"][0]["data"]
    return str(data[0])


def calls(response: httpx.Response) -> list[str]:
    body = response.json()
    path = (
        body["explain"] if "explain" in body else body["parameters"]["modulemesh_explain"]["path"]
    )
    return [e["module"] for e in path if e["event"] == "call"]


def requests_of(pool: Pool, name: str) -> int:
    time.sleep(0.7)  # the sidecar refreshes its envelope every 0.5 s
    return int(pool.envelope(name)["requests"])


def audit_of(r: Router, decision: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        found = [a for a in r.audit() if a["decision"] == decision]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


class TestTag:
    def test_email_without_header_goes_to_the_cleared_fallback(
        self, texts: Pool, tmp_path: Path
    ) -> None:
        tag = {"name": "pii", "classifiers": EMAIL}
        before = requests_of(texts, "plain")
        with gated(texts, tmp_path, "tagpii", tag) as r:
            response = send(r, TEXT)
            assert echoed(response) == TEXT  # the cleared module may see it
            assert calls(response) == ["cleared"]
            body = response.json()["parameters"]["modulemesh_explain"]
            assert body["tags"] == ["pii"]
            content = [e for e in body["path"] if e["event"] == "content"]
            assert content[0]["findings"] == [
                {"gate": "tagpii", "tag": "pii", "detector": "email", "action": "tag",
                 "count": 1}
            ]  # fmt: skip
            # An untagged text still goes to plain; only the email one was kept from it.
            assert calls(send(r, "no address here")) == ["plain"]
            assert requests_of(texts, "plain") == before + 1
            records = audit_of(r, "tag")
            assert records and records[0]["detectors"] == ["email"]
            assert records[0]["gate"] == "tagpii" and records[0]["tags"] == ["pii"]
            assert all(ADDRESS not in json.dumps(a) for a in r.audit())

    def test_binary_bytes_input_is_inspected_too(self, texts: Pool, tmp_path: Path) -> None:
        tag = {"name": "pii", "classifiers": EMAIL}
        with gated(texts, tmp_path, "tagbin", tag) as r:
            assert calls(send(r, TEXT, binary=True)) == ["cleared"]

    def test_no_cleared_fallback_is_refused(self, texts: Pool, tmp_path: Path) -> None:
        tag = {"name": "pii", "classifiers": EMAIL}
        before = requests_of(texts, "plain")
        with gated(texts, tmp_path, "tagnofb", tag, fallback=False) as r:
            response = send(r, TEXT)
            assert response.status_code == 403, response.text
            assert "'pii' is not in its clearance" in response.json()["error"]
            assert ADDRESS not in response.text
            assert requests_of(texts, "plain") == before
            assert audit_of(r, "deny")


class TestDeny:
    def test_refused_naming_tag_and_detector_never_the_text(
        self, texts: Pool, tmp_path: Path
    ) -> None:
        tag = {"name": "pii", "action": "deny", "classifiers": EMAIL}
        before = requests_of(texts, "cleared")
        with gated(texts, tmp_path, "denypii", tag) as r:
            response = send(r, TEXT)
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert "'pii'" in error and "detector email" in error and "'denypii'" in error
            assert ADDRESS not in response.text and "jane" not in response.text
            assert response.json()["explain"][0]["findings"][0]["action"] == "deny"
            assert requests_of(texts, "cleared") == before
            records = audit_of(r, "deny")
            assert records[0]["detectors"] == ["email"] and records[0]["gate"] == "denypii"

    def test_dryrun_deny_only_records_and_tags(self, texts: Pool, tmp_path: Path) -> None:
        tag = {"name": "pii", "action": "deny", "classifiers": EMAIL}
        modules = [
            texts.spec("plain", fallback="cleared"),
            texts.spec("cleared", clearance=["pii"]),
        ]
        nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "plain"}]}]
        graph = make_graph("dryden", modules, nodes, gates=["dryden"])
        gate = make_gate("dryden", [tag], mode="dryrun")
        with router(tmp_path, graph, texts.urls, [gate]) as r:
            response = send(r, TEXT)
            assert response.status_code == 200, response.text
            assert audit_of(r, "dryrun-deny")


class TestRedact:
    @pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
    def test_module_receives_the_placeholder(
        self, texts: Pool, tmp_path: Path, binary: bool
    ) -> None:
        tag = {"name": "pii", "action": "redact", "classifiers": EMAIL}
        with gated(texts, tmp_path, "redpii", tag, fallback=False) as r:
            response = send(r, TEXT + f" or {ADDRESS.upper()}", binary=binary)
            got = echoed(response)  # what the uncleared module itself received
            assert got == "please write to <EMAIL> about my order or <EMAIL>"
            assert calls(response) == ["plain"]  # redacted: no pii tag, no clearance needed
            explain = response.json()["parameters"]["modulemesh_explain"]
            assert explain["tags"] == []
            content = next(e for e in explain["path"] if e["event"] == "content")
            assert content["redacted"] == {"email": 2}
            assert ADDRESS not in response.text
            records = audit_of(r, "redact")
            assert records[0]["detectors"] == ["email"]
            assert ADDRESS not in json.dumps(r.audit())


class TestAuditLog:
    def test_router_log_is_sealed_and_verifies(self, texts: Pool, tmp_path: Path) -> None:
        """The router appends its records to MODULEMESH_AUDIT_LOG, MAC'd with the key file's
        key; `modulemesh audit verify` passes on it, and names a deleted record."""
        key = tmp_path / "key"
        key.write_text("router-test-key\n")
        log = tmp_path / "audit.jsonl"
        env = {"MODULEMESH_AUDIT_LOG": str(log), "MODULEMESH_AUDIT_KEY_FILE": str(key)}
        tag = {"name": "pii", "action": "redact", "classifiers": EMAIL}
        modules = [texts.spec("plain")]
        nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "plain"}]}]
        graph = make_graph("sealed", modules, nodes, gates=["sealed"])
        with router(tmp_path, graph, texts.urls, [make_gate("sealed", [tag])], env=env) as r:
            for _ in range(3):
                assert echoed(send(r, TEXT)) == TEXT.replace(ADDRESS, "<EMAIL>")
        lines = log.read_text().splitlines()
        assert len(lines) == 3 and all(ADDRESS not in line for line in lines)
        assert [json.loads(line)["graph"] for line in lines] == ["sealed"] * 3
        verify = [sys.executable, "-m", "modulemesh", "audit", "verify", str(log),
                  "--key-file", str(key)]  # fmt: skip
        done = subprocess.run(verify, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        log.write_text("\n".join([lines[0], lines[2]]) + "\n")  # record 1 deleted
        done = subprocess.run(verify, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and f"{log}:2: record 2 " in done.stdout, done.stdout

    def test_records_are_exported_as_opentelemetry_logs(self, texts: Pool, tmp_path: Path) -> None:
        """With an OTLP endpoint, each record also reaches the collector as a log record
        whose body is the sealed line, so a copy of the chain lives off the node."""
        tag = {"name": "pii", "action": "deny", "classifiers": EMAIL}
        modules = [texts.spec("plain")]
        nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "plain"}]}]
        graph = make_graph("otellog", modules, nodes, gates=["otellog"])
        with (
            OtlpReceiver() as rx,
            router(tmp_path, graph, texts.urls, [make_gate("otellog", [tag])], env=rx.env()) as r,
        ):
            assert send(r, TEXT).status_code == 403
            rx.wait_for(lambda: rx.log_records(), timeout=15, what="an audit log record")
            ((scope, body, _),) = rx.log_records()
        assert scope == "modulemesh.audit"
        record = json.loads(body)
        assert record["decision"] == "deny" and record["detectors"] == ["email"]
        assert record["seq"] == 0 and record["chain"] and ADDRESS not in body


class TestLargeInputs:
    def test_megabytes_of_hostile_text_are_redacted_while_the_router_keeps_serving(
        self, texts: Pool, tmp_path: Path
    ) -> None:
        """4 MB of digit filler (the card detector's worst case) with an address at the end:
        the module gets the placeholder, and while the router scans (seconds of CPU), it
        keeps answering: the scan of a big body runs off the event loop."""
        tag = {"name": "pii", "action": "redact",
               "classifiers": [*EMAIL, {"type": "content", "detector": "payment-card"}]}  # fmt: skip
        text = "4-" * (2 << 20) + " " + ADDRESS
        with gated(texts, tmp_path, "bigtext", tag, fallback=False) as r:
            outcome: dict[str, Any] = {}

            def big() -> None:
                started = time.monotonic()
                outcome["response"] = send(r, text, binary=True)
                outcome["seconds"] = time.monotonic() - started

            worker = threading.Thread(target=big)
            worker.start()
            slowest, probes = 0.0, 0
            while worker.is_alive():
                started = time.monotonic()
                assert httpx.get(f"{r.base}/v2/health/live", timeout=30).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                probes += 1
                time.sleep(0.05)
            worker.join()
            got = echoed(outcome["response"])
            assert got.endswith(" <EMAIL>") and ADDRESS not in got and len(got) > 4 << 20
            # The scan took long enough to matter (several probes ran during it), and no probe
            # waited for it: relative, so a fast quiet machine and a loaded one both hold.
            assert probes >= 5, (probes, outcome)
            assert slowest < outcome["seconds"] / 3, (slowest, outcome["seconds"])
