"""The chart ships the repository's generated CRDs unchanged, in crds/ (installed by Helm on
first install only; upgrades apply them server-side, see docs/operations.md "Upgrade").
"""

from __future__ import annotations

from chart.helm import CHART, REPO_ROOT, Helm, by_kind

REPO_CRDS = REPO_ROOT / "crds"
CHART_CRDS = CHART / "crds"
FIX = "cp crds/*.yaml charts/modulemesh/crds/"


def test_chart_crds_are_the_generated_crds() -> None:
    repo = {p.name: p.read_bytes() for p in REPO_CRDS.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in CHART_CRDS.glob("*.yaml")}
    assert set(repo) == {"modulegraphs.modulemesh.io.yaml", "privacygates.modulemesh.io.yaml"}
    assert set(chart) == set(repo), f"chart CRD files differ from crds/; run: {FIX}"
    for name in repo:
        assert chart[name] == repo[name], f"charts/modulemesh/crds/{name} drifted; run: {FIX}"


def test_crds_are_not_templates(helm: Helm) -> None:
    # In crds/, Helm creates them before the templates on install and never deletes them on
    # uninstall (graphs survive an uninstall); they are not part of the release's manifest.
    assert not by_kind(helm.render(), "CustomResourceDefinition")
    with_crds = by_kind(helm.render(extra=["--include-crds"]), "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in with_crds) == [
        "modulegraphs.modulemesh.io",
        "privacygates.modulemesh.io",
    ]


def test_helm_show_crds_prints_them(helm: Helm) -> None:
    shown = helm.run("show", "crds", str(CHART)).stdout
    for path in REPO_CRDS.glob("*.yaml"):
        assert path.read_text().strip() in shown
