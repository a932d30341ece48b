"""What the operator says and does when nothing needs doing, against the real control plane.

Regression tests for the defects found at scale (issue 14):

- events from the operator-wide refresh loop are posted: a graph's ``Degraded`` Warning, which
  only that loop can find (it alone reads the router's envelopes), reaches the Events API;
- a foreign field on a child (``kubectl annotate``, ``kubectl rollout restart``) and the pod
  churn after it cause no apply and no ``Reconciled`` event, while a field the operator owns
  that someone changes or removes comes back within seconds;
- a new graph whose pods are starting posts no Warning.

The router's envelopes come from a real ``modulemesh run`` of the same modules on 127.0.0.1,
reached through a small HTTP proxy on 127.0.0.1 that stands in for the cluster's Service
routing (the operator runs outside the cluster, and its pods are kwok's).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from localmesh.test_run import Run

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import REPO_ROOT, OperatorProcess, free_port, install_crds
from e2e.test_operator import condition, graph_doc, wait_condition

QUICKSTART = REPO_ROOT / "examples" / "quickstart.yaml"


class RouterProxy:
    """An HTTP proxy on 127.0.0.1 (the operator's ``HTTP_PROXY``): every request for a
    router Service goes to the local router at ``target``, or gets 502 while there is none."""

    def __init__(self) -> None:
        self.target: int | None = None
        self.hosts: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                proxy.hosts.append(url.hostname or "")
                status, body = 502, b"no router"
                if proxy.target is not None:
                    try:
                        local = f"http://127.0.0.1:{proxy.target}{url.path}"
                        with urllib.request.urlopen(local, timeout=5) as answer:
                            status, body = answer.status, answer.read()
                    except urllib.error.HTTPError as error:
                        status, body = error.code, error.read()
                    except OSError:
                        status, body = 502, b"router down"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(scope="module")
def proxy() -> Iterator[RouterProxy]:
    p = RouterProxy()
    yield p
    p.close()


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, proxy: RouterProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator whose envelope reads go through the proxy (the API server's https on
    127.0.0.1 does not)."""
    install_crds(cluster)
    env = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "127.0.0.1,localhost"}
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = OperatorProcess(cluster, log, env=env).start()
    yield proc
    proc.stop()


def events_of(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return items


def summary(events: list[dict[str, Any]]) -> list[str]:
    return [f"{e['type']} {e['reason']}: {e.get('message', '')[:120]}" for e in events]


def applied_lines(op: OperatorProcess, ns: str) -> list[str]:
    """The operator's log lines for children it applied in ``ns``."""
    text = op.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if re.search(rf"applied {ns}/\w+/", line)]


# --- events from the refresh loop ---------------------------------------------------------


def test_a_degraded_event_from_the_refresh_loop_is_posted(
    cluster: Cluster,
    operator: OperatorProcess,
    proxy: RouterProxy,
    namespace: str,
    tmp_path: Path,
) -> None:
    # The same modules served for real on 127.0.0.1: the classifier asks for a GPU and runs on
    # this machine's CPU provider, so once its envelope is read the graph is Degraded.
    examples = tmp_path / "examples"
    examples.mkdir()
    shutil.copy(QUICKSTART, examples)
    shutil.copy(REPO_ROOT / "examples" / "build_models.py", examples)
    port = free_port()
    run = Run([str(examples / "quickstart.yaml"), "--port", str(port), "--quiet"], examples)
    try:
        # Scaled to zero, the graph has no pods: once applied it is quiet, and only the refresh
        # loop (which alone reads envelopes) reconciles it, so the event can come from it alone.
        doc = graph_doc("idle", router={"replicas": 0})
        for module in doc["spec"]["modules"]:
            module["replicas"] = 0
        cluster.apply(doc, namespace)
        graph = wait_condition(
            cluster, operator, namespace, "idle", "RouterReady", "False", timeout=120
        )
        assert condition(graph, "RouterReady")["reason"] == "RouterScaledToZero"
        assert condition(graph, "Degraded")["status"] == "Unknown"  # the proxy answers 502
        run.wait_line("ready:", timeout=180)
        proxy.target = port
        graph = wait_condition(
            cluster, operator, namespace, "idle", "Degraded", "True", timeout=120
        )
        assert condition(graph, "Degraded")["reason"] == "GPUFallbackToCPU"

        def degraded_event() -> list[dict[str, Any]] | None:
            found = [
                e
                for e in events_of(cluster, namespace, "idle")
                if (e["type"], e["reason"]) == ("Warning", "Degraded")
            ]
            return found or None

        try:
            found = wait_until(degraded_event, timeout=30, message="a Degraded Warning event")
        except TimeoutError as error:
            raise AssertionError(
                f"{error}\nevents: {summary(events_of(cluster, namespace, 'idle'))}\n"
                f"operator log:\n{operator.log()}"
            ) from error
        assert (
            "classifier has resources.gpu 1 but serves on CPUExecutionProvider"
            in (found[0]["message"])
        )
        assert f"idle-router.{namespace}.svc.cluster.local" in proxy.hosts
        assert "LookupError" not in operator.log_path.read_text(errors="replace")
    finally:
        proxy.target = None
        if run.popen.poll() is None:
            run.popen.kill()
            run.popen.wait(10)


# --- a new graph ---------------------------------------------------------------------------


def test_a_new_graph_starting_posts_no_warning(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(graph_doc("fresh"), namespace)
    wait_condition(cluster, operator, namespace, "fresh", "Ready", "True", timeout=180)

    def ready_event() -> list[dict[str, Any]] | None:
        events = events_of(cluster, namespace, "fresh")
        return events if any(e["reason"] == "Ready" for e in events) else None

    wait_until(ready_event, timeout=30, message="the Ready event")
    time.sleep(3)  # events are posted as they happen: any Warning would be there by now
    events = events_of(cluster, namespace, "fresh")
    assert [e for e in events if e["type"] == "Warning"] == [], summary(events)
    reasons = {e["reason"] for e in events}
    assert {"Reconciled", "Ready"} <= reasons, summary(events)


# --- drift: only the operator's own fields ------------------------------------------------


def test_foreign_fields_cause_no_apply_and_owned_fields_come_back(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(graph_doc("quiet"), namespace)
    wait_condition(cluster, operator, namespace, "quiet", "Ready", "True", timeout=180)
    deployment = "quiet-classifier"

    def reconciled() -> int:
        return sum(e["reason"] == "Reconciled" for e in events_of(cluster, namespace, "quiet"))

    # Settled: the creation's applies are done and announced.
    wait_until(lambda: reconciled() >= 1, timeout=30, message="the first Reconciled event")
    time.sleep(3)
    events_before, applied_before = reconciled(), len(applied_lines(operator, namespace))

    # Foreign fields and the churn after them: a hand-added annotation, a rollout restart
    # (new pods for the embedder), a deleted classifier pod.
    cluster.kubectl("-n", namespace, "annotate", "deployment", deployment, "team=ml")
    cluster.kubectl("-n", namespace, "rollout", "restart", "deployment", "quiet-embedder")
    pods = cluster.kubectl_json(
        "-n", namespace, "get", "pods", "-l", "modulemesh.io/module=classifier"
    )["items"]
    cluster.kubectl("-n", namespace, "delete", "pod", pods[0]["metadata"]["name"], "--wait=false")
    restarted = cluster.kubectl_json("-n", namespace, "get", "deployment", "quiet-embedder")
    template = restarted["spec"]["template"]["metadata"].get("annotations") or {}
    assert "kubectl.kubernetes.io/restartedAt" in template

    def replaced() -> bool:
        now = cluster.kubectl_json(
            "-n", namespace, "get", "pods", "-l", "modulemesh.io/module=classifier"
        )["items"]
        names = {p["metadata"]["name"] for p in now}
        return pods[0]["metadata"]["name"] not in names and len(names) == 1

    wait_until(replaced, timeout=60, message="the deleted classifier pod to be replaced")
    wait_condition(cluster, operator, namespace, "quiet", "Ready", "True", timeout=120)
    time.sleep(8)  # the operator has seen every event of that churn (and a refresh or two)
    after = cluster.kubectl_json("-n", namespace, "get", "deployment", deployment)
    assert after["metadata"]["annotations"]["team"] == "ml"  # a foreign field stays
    assert reconciled() == events_before, summary(events_of(cluster, namespace, "quiet"))
    assert applied_lines(operator, namespace)[applied_before:] == [], operator.log()

    # A field the operator owns, changed by hand, comes back (and only that child is applied).
    image = after["spec"]["template"]["spec"]["containers"][0]["image"]
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/image",
              "value": "example.invalid/not-ours:1"}]  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "patch", "deployment", deployment, "--type=json", "-p", json.dumps(patch)
    )

    def image_back() -> bool:
        d = cluster.kubectl_json("-n", namespace, "get", "deployment", deployment)
        return bool(d["spec"]["template"]["spec"]["containers"][0]["image"] == image)

    wait_until(image_back, timeout=60, message="the hand-edited image to be restored")
    new_lines = applied_lines(operator, namespace)[applied_before:]
    assert new_lines and all(f"Deployment/{deployment}" in line for line in new_lines), new_lines
    wait_until(
        lambda: reconciled() > events_before, timeout=30, message="a Reconciled event for it"
    )

    # One the operator owns, removed by hand, comes back too.
    cluster.kubectl(
        "-n", namespace, "annotate", "deployment", deployment, "modulemesh.io/applied-intent-"
    )

    def annotation_back() -> bool:
        d = cluster.kubectl_json("-n", namespace, "get", "deployment", deployment)
        return "modulemesh.io/applied-intent" in (d["metadata"].get("annotations") or {})

    wait_until(annotation_back, timeout=60, message="the removed owned annotation to come back")
    final = cluster.kubectl_json("-n", namespace, "get", "deployment", deployment)
    assert final["metadata"]["annotations"]["team"] == "ml"
