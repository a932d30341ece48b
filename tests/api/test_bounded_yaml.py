"""Bounded YAML loading: deep nesting, alias bombs and duplicate keys are refused with the
field path and line, before anything recurses or expands, by ``validate`` and ``render``
(real subprocesses: no traceback, bounded time and memory); the libyaml loader is the one
used; decoded JSON (the webhook's objects) has the same depth bound."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from modulemesh.api import bounded_yaml, load_text
from modulemesh.api.bounded_yaml import MAX_DEPTH, BoundsError, check_depth

ROOT = Path(__file__).resolve().parents[2]

HEAD = """apiVersion: modulemesh.io/v1alpha1
kind: ModuleGraph
metadata: {name: g}
spec:
  routing:
    entry: main
    nodes:
    - {name: main, type: sequence, steps: [{module: a}]}
  modules:
  - name: a
    model: {path: a.onnx}
"""

NESTED = HEAD + "    affinity: {x: " + "[" * 1000 + "]" * 1000 + "}\n"

LAUGHS = "\n".join(
    f"      l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)
)
BOMB = HEAD + '    affinity:\n      l0: &l0 ["lol"]\n' + LAUGHS + "\n"

DUPLICATE = HEAD + "    resources: {gpu: 1}\n    resources: {gpu: 0}\n"


def only_issue(text: str) -> str:
    issues = load_text(text, "g.yaml").issues
    assert len(issues) == 1, issues
    return str(issues[0])


# --- the loader --------------------------------------------------------------------------------


def test_deep_nesting_names_the_field_and_line() -> None:
    message = only_issue(NESTED)
    assert message.startswith("error: g.yaml: spec.modules[0].affinity.x: nested more than 64")
    assert "(line 12)" in message


def test_nesting_just_past_the_bound_is_refused_and_at_it_accepted() -> None:
    # the document itself, spec, modules, [0], affinity: five levels before x's lists
    inner = MAX_DEPTH - 5
    assert not load_text(HEAD + "    affinity: {x: " + "[" * inner + "]" * inner + "}\n").issues
    over = inner + 1
    message = only_issue(HEAD + "    affinity: {x: " + "[" * over + "]" * over + "}\n")
    assert "nested more than 64 levels deep" in message


def test_alias_bomb_is_refused_naming_the_field() -> None:
    started = time.monotonic()
    message = only_issue(BOMB)
    assert time.monotonic() - started < 2
    assert "spec.modules[0].affinity.l" in message
    assert "alias bomb" in message


def test_many_aliases_are_refused_even_when_small() -> None:
    text = HEAD + "    affinity:\n      a: &a x\n      b: [" + ", ".join(["*a"] * 1001) + "]\n"
    assert "more than 1000 aliases" in only_issue(text)


def test_a_few_aliases_still_work() -> None:
    text = HEAD.replace("model: {path: a.onnx}", "model: &m {path: a.onnx}") + (
        "  - name: b\n    model: *m\n"
    )
    docs = load_text(text)
    assert not docs.issues
    assert [str(m.model.path) for m in docs.graphs[0].spec.modules] == ["a.onnx", "a.onnx"]


def test_duplicate_key_is_refused_naming_it_and_its_line() -> None:
    message = only_issue(DUPLICATE)
    assert message.startswith("error: g.yaml: spec.modules[0].resources: duplicate key")
    assert "'resources'" in message and "(line 13)" in message


def test_duplicate_key_in_a_later_document_names_the_document() -> None:
    text = HEAD + "---\n" + DUPLICATE
    issues = load_text(text, "g.yaml").issues
    assert [i.path for i in issues] == ["g.yaml#2: spec.modules[0].resources"]


def test_keys_that_differ_in_type_are_not_duplicates_and_merge_keys_are_allowed() -> None:
    assert bounded_yaml.load_all("1: a\n'1': b\n") == [{1: "a", "1": "b"}]
    assert bounded_yaml.load_all("a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n") == [
        {"a": {"k": 1}, "b": {"k": 1, "j": 2}}
    ]


def test_oversized_text_is_refused_before_parsing() -> None:
    with pytest.raises(BoundsError, match="characters is more than"):
        bounded_yaml.load_all("#" * (bounded_yaml.MAX_CHARS + 1))


def test_an_alias_inside_the_value_it_names_is_refused_as_a_cycle() -> None:
    message = only_issue(HEAD + "    affinity: &x {k: [*x]}\n")
    assert "spec.modules[0].affinity.k[0]: alias *x is inside the value it names" in message


def test_keys_equal_after_resolution_are_duplicates_too() -> None:
    with pytest.raises(BoundsError, match="duplicate key 'on'"):
        bounded_yaml.load_all("yes: 1\non: 2\n")  # both are the boolean true in YAML 1.1


def test_libyaml_parses_and_a_large_graph_is_built_in_one_pass() -> None:
    assert yaml.__with_libyaml__  # the project's PyYAML wheels carry libyaml
    assert bounded_yaml.LOADER is yaml.CSafeLoader
    modules = [
        {
            "name": f"m{i}",
            "model": {"path": f"m{i}.onnx"},
            "affinity": {"nodeAffinity": {"required": [{"key": "zone", "values": ["a", "b"]}]}},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
        for i in range(3000)
    ]
    text = yaml.safe_dump({"spec": {"modules": modules}})
    assert len(text) > 700_000  # the size that took 18 s with the pure-Python loader
    documents, exotic = bounded_yaml.read_events(yaml.parse(text, Loader=yaml.CSafeLoader))
    assert not exotic  # no node tree, no second load
    assert documents == [{"spec": {"modules": modules}}]


SAMPLES = [
    "a: 1\nb: 1.5\nc: true\nd: null\ne: ~\nf: 2001-12-14t21:59:43.10-05:00\ng: 0x1F\n"
    "h: 0o17\ni: .inf\nk: '1'\nl: !!str 5\nm: !!binary aGVsbG8=\nn: [1, 'x', {a: b}]\n"
    "o: |\n  text\np: >-\n  folded\n  text\n",
    "- &a {x: 1}\n- *a\n- &s hello\n- *s\n",
    "a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n",  # a merge key: PyYAML's loader builds it
    "!!set {a, b}\n",
    "--- 1\n---\n---\n- x\n",
    "a: !!float 1\n",
]


@pytest.mark.parametrize(
    "text",
    SAMPLES + [p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml"))],
    ids=[f"sample{i}" for i in range(len(SAMPLES))]
    + [p.name for p in sorted((ROOT / "examples").glob("*.yaml"))],
)
def test_documents_are_what_pyyamls_safe_loader_builds(text: str) -> None:
    assert bounded_yaml.load_all(text) == list(yaml.safe_load_all(text))


# --- decoded JSON ------------------------------------------------------------------------------


def test_check_depth_refuses_deep_json_naming_the_field_without_recursing() -> None:
    deep: object = []
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    with pytest.raises(BoundsError) as caught:
        check_depth({"spec": {"modules": [{"affinity": {"x": deep}}]}})
    assert caught.value.path == "spec.modules[0].affinity.x"
    check_depth({"spec": {"modules": [{"affinity": {"x": [[1]]}}]}})


# --- the commands, as users run them -----------------------------------------------------------


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m modulemesh ARGS`` as a user runs it, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "modulemesh", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("command", ["validate", "render"])
@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (NESTED, "spec.modules[0].affinity.x", "nested more than 64 levels deep"),
        (BOMB, "spec.modules[0].affinity.l", "alias bomb"),
        (DUPLICATE, "spec.modules[0].resources", "duplicate key 'resources'"),
    ],
    ids=["nested", "alias-bomb", "duplicate-key"],
)
def test_commands_refuse_with_one_line_naming_the_field(
    tmp_path: Path, command: str, text: str, field: str, words: str
) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    started = time.monotonic()
    result = run_cli([command, str(path)], tmp_path)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert f"error: {path}: {field}" in result.stderr
    assert words in result.stderr


def test_alias_bomb_render_stays_within_memory(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(BOMB)
    process = subprocess.Popen(
        [sys.executable, "-m", "modulemesh", "render", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("render of an alias bomb did not finish in 60 s")
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 1
    assert usage.ru_maxrss < 400 * 1024, f"peak RSS {usage.ru_maxrss // 1024} MiB"
