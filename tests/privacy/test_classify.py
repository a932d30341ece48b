"""Headers -> tags, as the router and the sidecar both read them (:mod:`modulemesh.privacy`):
repeated field lines are one comma-joined list, classifier values are matched item by item,
and what cannot be read one way only fails closed. Also the non-list header rule
(:func:`modulemesh.headers.single`) and the W3C trace ids audit records carry."""

from __future__ import annotations

import re
from typing import Any

import pytest

from modulemesh import headers
from modulemesh.api.gate import PrivacyGate, PrivacyGateSpec
from modulemesh.api.resolved import parse_gates_json, sidecar_gates_json
from modulemesh.privacy import Classifier, declared_tags
from modulemesh.telemetry import new_traceparent, trace_id_from_traceparent

PHI = PrivacyGateSpec.model_validate(
    {"tags": [{"name": "phi", "classifiers": [{"header": "X-Data-Class", "values": ["PHI"]}]},
              {"name": "tenant", "classifiers": [{"header": "x-tenant"}]}]}
)  # fmt: skip


def classify(*lines: tuple[str, str]) -> frozenset[str]:
    """Tags of a request with these header lines (as an ASGI server hands them over)."""
    raw = [(name.encode(), value.encode("latin-1")) for name, value in lines]
    return Classifier.from_gates([PHI]).classify(headers.fields(raw))


# --- repeated field lines --------------------------------------------------------------------


def test_repeated_lines_are_joined_in_order_never_replaced() -> None:
    raw = [(b"x-a", b"1"), (b"x-b", b"2"), (b"x-a", b""), (b"x-a", b"3")]
    assert headers.fields(raw) == {"x-a": "1, , 3", "x-b": "2"}
    assert headers.fields(raw, {b"x-b"}) == {"x-b": "2"}


def test_a_second_empty_tags_line_does_not_untag_the_request() -> None:
    assert classify(("x-modulemesh-tags", "phi"), ("x-modulemesh-tags", "")) == {"phi"}
    assert classify(("x-modulemesh-tags", ""), ("x-modulemesh-tags", "PII")) == {"pii"}


def test_a_second_classifier_line_does_not_replace_the_first() -> None:
    assert classify(("x-data-class", "phi"), ("x-data-class", "none")) == {"phi"}
    assert classify(("x-data-class", "none"), ("x-data-class", "phi")) == {"phi"}


# --- classifier values, item by item ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["phi", " PHI ", "phi, other", "other,phi", "other, Phi,x"],
)
def test_a_listed_value_anywhere_in_the_list_tags(value: str) -> None:
    assert classify(("x-data-class", value)) == {"phi"}


@pytest.mark.parametrize("value", ["none", "other, public", "phix", "ph i"])
def test_other_values_do_not_tag(value: str) -> None:
    assert classify(("x-data-class", value)) == frozenset()


@pytest.mark.parametrize("value", ["", "none, ", ",", '"phi"', 'none, "x,phi"', "a\\,phi"])
def test_empty_or_quoted_items_fail_closed(value: str) -> None:
    assert classify(("x-data-class", value)) == {"phi"}


def test_a_classifier_without_values_tags_on_presence() -> None:
    assert classify(("x-tenant", "")) == {"tenant"}
    assert classify(("x-tenant", "acme"), ("x-data-class", "phi")) == {"tenant", "phi"}
    assert classify(("x-other", "phi")) == frozenset()


# --- the tags header -------------------------------------------------------------------------


def test_declared_tags_are_trimmed_lower_cased_and_empty_items_skipped() -> None:
    assert declared_tags(" PII ,, eu.west ,") == {"pii", "eu.west"}
    assert declared_tags("") == declared_tags(None) == frozenset()


@pytest.mark.parametrize("value", ["ph i", "phi;q=1", '"phi"', "-phi", "é", "a" * 64])
def test_an_item_that_is_not_a_tag_is_refused_naming_the_header(value: str) -> None:
    with pytest.raises(headers.HeaderError) as caught:
        classify(("x-modulemesh-tags", f"pii, {value}"))
    assert caught.value.header == "x-modulemesh-tags"
    assert caught.value.message.startswith("x-modulemesh-tags: ")
    assert repr(value.strip()) in caught.value.message


# --- non-list headers ------------------------------------------------------------------------


def test_a_single_valued_header_sent_twice_differently_is_ambiguous() -> None:
    assert headers.single("x-modulemesh-priority", None) is None
    assert headers.single("x-modulemesh-priority", " critical ") == "critical"
    assert headers.single("x-modulemesh-priority", "critical, critical") == "critical"
    with pytest.raises(headers.HeaderError, match=r"^x-modulemesh-priority is sent more than once"):
        headers.single("x-modulemesh-priority", "critical, sheddable")
    with pytest.raises(headers.HeaderError, match="x-modulemesh-explain"):
        headers.single("x-modulemesh-explain", "1, ")


# --- the sidecar's copy of the gates ---------------------------------------------------------


def gate(name: str, spec: dict[str, Any]) -> PrivacyGate:
    return PrivacyGate.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "PrivacyGate",
         "metadata": {"name": name}, "spec": spec}
    )  # fmt: skip


def test_the_sidecar_gets_the_classifying_gates_and_classifies_identically() -> None:
    gates = [gate("phi", PHI.model_dump(by_alias=True)), gate("plain", {"tags": [{"name": "pii"}]})]
    text = sidecar_gates_json(gates)
    assert text is not None and sidecar_gates_json(reversed(gates)) == text  # stable
    copy = parse_gates_json(text)
    assert list(copy) == ["phi"] and copy["phi"] == PHI
    router, sidecar = Classifier.from_gates([PHI]), Classifier.from_gates(copy.values())
    for fields in ({"x-data-class": "phi, x"}, {"x-tenant": ""}, {"x-data-class": "none"}):
        assert router.classify(fields) == sidecar.classify(fields)
    assert sidecar_gates_json(gates[1:]) is None
    # only the classifiers travel: regions, audit settings and descriptions do not roll pods
    elsewhere = PHI.model_dump(by_alias=True)
    elsewhere["tags"][0] |= {"allowedRegions": ["eu-west"], "description": "health data"}
    elsewhere["tags"].append({"name": "plain"})
    elsewhere["audit"] = {"logAllowed": True}
    assert sidecar_gates_json([gate("phi", elsewhere), gates[1]]) == text
    # nor do content classifiers: the router runs them and forwards the tags they give
    email = {"type": "content", "detector": "email"}
    elsewhere["tags"][0]["classifiers"].append(email)
    elsewhere["tags"].append({"name": "mail", "action": "redact", "classifiers": [email]})
    assert sidecar_gates_json([gate("phi", elsewhere), gates[1]]) == text
    assert sidecar_gates_json([gate("mail", {"tags": [elsewhere["tags"][-1]]})]) is None


def test_unreadable_gates_json_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"phi: .*a gate needs tags, differentialPrivacy or both"):
        parse_gates_json('{"phi": {}}')
    with pytest.raises(ValueError, match="Invalid JSON"):
        parse_gates_json("phi")


def test_a_classifier_value_must_be_one_list_item() -> None:
    for bad in ("phi, other", '"phi"', ""):
        with pytest.raises(ValueError, match=r"values\.0"):
            PrivacyGateSpec.model_validate(
                {"tags": [{"name": "phi", "classifiers": [{"header": "x-c", "values": [bad]}]}]}
            )


# --- trace ids -------------------------------------------------------------------------------


def test_generated_traceparents_are_valid_and_distinct() -> None:
    made = {new_traceparent() for _ in range(100)}
    assert len(made) == 100
    for value in made:
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", value)
        assert trace_id_from_traceparent(value) == value[3:35]


def test_joined_or_malformed_traceparents_are_no_trace_context() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_from_traceparent(good) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_from_traceparent("01-" + good[3:] + "-future") is not None
    for bad in (f"{good}, {good}", good + "-x", "ff" + good[2:], good[:36] + "0" * 16 + "-01"):
        assert trace_id_from_traceparent(bad) is None
