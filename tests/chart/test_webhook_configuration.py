"""The chart owns the admission webhook's ValidatingWebhookConfiguration.

It renders `modulemesh.io` with both webhooks calling the chart's Service, the failure policy
and the watched namespaces from the values, and no caBundle (the operator patches that in);
the object is the one `modulemesh webhook-configuration --service ...` prints for the same
settings (one definition for the chart and for an operator run outside the cluster); and
nothing is rendered with the webhook off.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from chart.helm import NAMESPACE, RELEASE, Helm, by_kind

SERVICE = f"{NAMESPACE}/{RELEASE}-modulemesh-webhook:443"


def command_output(*args: str) -> dict[str, Any]:
    """What the documented command prints, run as a process."""
    proc = subprocess.run(
        [sys.executable, "-m", "modulemesh", "webhook-configuration", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},  # no MODULEMESH_* from the caller
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = yaml.safe_load(proc.stdout)
    return doc


@pytest.mark.parametrize(
    ("set_values", "flags"),
    [
        ({}, ["--webhook-port", "9443", "--service", SERVICE]),
        (
            {"webhook.failurePolicy": "Fail", "watchNamespaces": "{team-b,team-a}"},
            [
                *("--webhook-port", "9443", "--service", SERVICE, "--failure-policy", "Fail"),
                *("-n", "team-b", "-n", "team-a"),
            ],
        ),
    ],
    ids=["defaults", "fail-and-namespaces"],
)
def test_the_chart_renders_what_the_command_prints(
    helm: Helm, set_values: dict[str, str], flags: list[str]
) -> None:
    (rendered,) = by_kind(helm.render(set_values=set_values), "ValidatingWebhookConfiguration")
    printed = command_output(*flags)
    assert rendered["metadata"]["name"] == printed["metadata"]["name"] == "modulemesh.io"
    assert rendered["webhooks"] == printed["webhooks"]
    for hook in rendered["webhooks"]:
        assert "caBundle" not in hook["clientConfig"]  # the operator's to fill in
        assert hook["clientConfig"]["service"]["name"] == f"{RELEASE}-modulemesh-webhook"
        assert hook["failurePolicy"] == set_values.get("webhook.failurePolicy", "Ignore")
    # The Service it names is the chart's, in front of the operator's webhook port.
    services = {s["metadata"]["name"]: s for s in by_kind(helm.render(), "Service")}
    assert services[f"{RELEASE}-modulemesh-webhook"]["spec"]["ports"][0]["port"] == 443


def test_a_local_operator_gets_a_url_configuration() -> None:
    printed = command_output("--webhook-port", "18443", "--webhook-host", "127.0.0.1")
    urls = [h["clientConfig"]["url"] for h in printed["webhooks"]]
    assert urls == ["https://127.0.0.1:18443/modulegraphs", "https://127.0.0.1:18443/privacygates"]


def test_no_configuration_without_the_webhook(helm: Helm) -> None:
    objects = helm.render(set_values={"webhook.enabled": "false"})
    assert not by_kind(objects, "ValidatingWebhookConfiguration")
    assert not by_kind(objects, "MutatingWebhookConfiguration")
