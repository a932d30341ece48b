"""`helm lint --strict` and `helm template` over the default values and every feature's values file.

Each file in tests/chart/values/ exercises one feature (watched namespaces, custom images, GPU
resource name, tuning, scheduling, an existing ServiceAccount); every one must lint cleanly and
render well-formed objects in the release namespace.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chart.helm import CHART, NAMESPACE, VALUES_DIR, Helm

VALUES_FILES = sorted(p.name for p in VALUES_DIR.glob("*.yaml"))
CASES = [pytest.param([], id="defaults")] + [
    pytest.param([f], id=Path(f).stem) for f in VALUES_FILES
]
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "Namespace",
    "ValidatingWebhookConfiguration",
}


def test_every_feature_has_a_values_file() -> None:
    assert {
        "watch-namespaces.yaml",
        "custom-images.yaml",
        "custom-gpu.yaml",
        "tuning.yaml",
        "scheduling.yaml",
        "existing-serviceaccount.yaml",
    } <= set(VALUES_FILES)


@pytest.mark.parametrize("values_files", CASES)
def test_lint_strict_passes(helm: Helm, values_files: list[str]) -> None:
    proc = helm.lint(values_files)
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("values_files", CASES)
def test_template_renders_well_formed_objects(helm: Helm, values_files: list[str]) -> None:
    objects = helm.render(values_files)
    assert objects, "nothing rendered"
    kinds = [o["kind"] for o in objects]
    assert kinds.count("Deployment") == 1
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind"), obj
        meta = obj["metadata"]
        assert meta["name"] and len(meta["name"]) <= 63, meta
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "modulemesh"
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, obj["kind"]
        elif obj["kind"] not in ("Role", "RoleBinding"):
            assert meta["namespace"] == NAMESPACE, (obj["kind"], meta)


def test_notes_tell_how_to_upgrade_crds(helm: Helm) -> None:
    # NOTES.txt is what `helm install` prints; it must carry the CRD upgrade step.
    proc = helm.run("install", "mm", str(CHART), "--dry-run=client", "-n", NAMESPACE)
    assert "kubectl apply --server-side --force-conflicts -f" in proc.stdout
    assert "never upgrades" in proc.stdout
