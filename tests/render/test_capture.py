"""A graph's capture in a cluster (issue 16, point 4): with capture.claimName the router pods
mount the claim and write the capture there; without one a relative path goes to the pod's
scratch /tmp (its root file system is read-only); an absolute path is kept; no capture, no
volume."""

from __future__ import annotations

import json
from typing import Any

import pytest
from render.render_builders import by_kind, graph

from modulemesh.operator.render import CAPTURE_MOUNT, RESOLVED_KEY, render
from modulemesh.operator.settings import RenderSettings


def _router_and_capture(capture: dict[str, Any] | None) -> tuple[dict[str, Any], Any]:
    spec = {} if capture is None else {"capture": capture}
    objects = render(graph(**spec), [], RenderSettings())
    router = by_kind(objects, "Deployment")["g-router"]["spec"]["template"]["spec"]
    (config,) = by_kind(objects, "ConfigMap").values()
    resolved = json.loads(config["data"][RESOLVED_KEY])
    return router, resolved["spec"].get("capture")


def test_a_claim_is_mounted_and_the_capture_written_on_it() -> None:
    router, capture = _router_and_capture(
        {"rate": 0.1, "path": "g/{hostname}.jsonl", "claimName": "captures"}
    )
    assert {"name": "capture", "persistentVolumeClaim": {"claimName": "captures"}} in router[
        "volumes"
    ]
    (container,) = router["containers"]
    assert {"name": "capture", "mountPath": CAPTURE_MOUNT} in container["volumeMounts"]
    assert capture["path"] == f"{CAPTURE_MOUNT}/g/{{hostname}}.jsonl"


@pytest.mark.parametrize(
    ("path", "expected"), [("c.jsonl", "/tmp/c.jsonl"), ("/data/c.jsonl", "/data/c.jsonl")]
)
def test_without_a_claim_the_capture_goes_to_scratch(path: str, expected: str) -> None:
    router, capture = _router_and_capture({"rate": 0.1, "path": path})
    assert capture["path"] == expected
    assert not any(v["name"] == "capture" for v in router["volumes"])


def test_no_capture_no_volume() -> None:
    router, capture = _router_and_capture(None)
    assert capture is None
    assert not any(v["name"] == "capture" for v in router["volumes"])
