# ruff: noqa: RUF001, RUF003 -- the adversarial texts are look-alike characters on purpose
"""Content detectors, the gate fields that declare them, and the scanner that applies a tag's
action: what each built-in finds (and the checksums that keep look-alike numbers out), custom
RE2 patterns (refused when unusable), normalisation against disguises, and spans mapped back
to the original text for redaction. The adversarial cases double as the record of what is
caught and what is not (docs/privacy.md lists the same)."""

from __future__ import annotations

import base64
import time
from typing import Any, get_args

import numpy as np
import pytest
from pydantic import ValidationError

from modulemesh import oip
from modulemesh.api.gate import DetectorKind, GateTag, NationalIdFormat, PrivacyGateSpec
from modulemesh.privacy.detectors import NATIONAL_IDS, builtin, custom, normalize
from modulemesh.privacy.redact import ContentScanner


def found(kind: DetectorKind, text: str, national_id: str | None = None) -> list[str]:
    """What a built-in detector finds in ``text``, as original substrings."""
    norm, index = normalize(text)
    out = []
    for start, end in builtin(kind, national_id).find(norm):
        if index is not None:
            start, end = index[start], index[end - 1] + 1
        out.append(text[start:end])
    return out


def scanner(action: str = "tag", mode: str = "enforce", *classifiers: dict[str, Any]) -> Any:
    tags = [
        {
            "name": "pii",
            "action": action,
            "classifiers": list(classifiers) or [{"type": "content", "detector": "email"}],
        }
    ]
    return ContentScanner.from_gates({"g": PrivacyGateSpec.model_validate(
        {"mode": mode, "tags": tags})})  # fmt: skip


class TestBuiltins:
    def test_email(self) -> None:
        assert found(DetectorKind.EMAIL, "to a.b+c@mail.example.co.uk, not @x or a@b") == [
            "a.b+c@mail.example.co.uk"
        ]

    def test_phone_international_and_north_american(self) -> None:
        text = "call +44 20 7946 0958, 0049 30 901820 or (202) 555-0143; order 12345"
        assert found(DetectorKind.PHONE, text) == [
            "+44 20 7946 0958", "0049 30 901820", "(202) 555-0143"
        ]  # fmt: skip

    def test_payment_card_is_luhn_checked(self) -> None:
        assert found(DetectorKind.PAYMENT_CARD, "4111 1111 1111 1111") == ["4111 1111 1111 1111"]
        assert found(DetectorKind.PAYMENT_CARD, "4111 1111 1111 1112") == []
        # after an unrelated number, the card's own groups are found
        assert found(DetectorKind.PAYMENT_CARD, "ref 12 5500-0000-0000-0004 ok") == [
            "5500-0000-0000-0004"
        ]

    def test_iban_is_checksum_checked(self) -> None:
        assert found(DetectorKind.IBAN, "IBAN GB82 WEST 1234 5698 7654 32 THANKS") == [
            "GB82 WEST 1234 5698 7654 32"
        ]
        assert found(DetectorKind.IBAN, "GB83 WEST 1234 5698 7654 32") == []

    def test_ip_addresses(self) -> None:
        assert found(DetectorKind.IPV4, "from 10.1.2.3, not 300.1.2.3 or 1.2.3.4.5") == ["10.1.2.3"]
        assert found(DetectorKind.IPV6, "at 2001:db8::8a2e:370:7334 at 12:30:45") == [
            "2001:db8::8a2e:370:7334"
        ]

    @pytest.mark.parametrize(
        ("fmt", "good", "bad"),
        [
            ("us-ssn", "SSN 123-45-6789", "SSN 666-45-6789"),
            ("nl-bsn", "BSN 111222333", "BSN 111222334"),
            ("es-dni", "DNI 12345678Z", "DNI 12345678A"),
            ("de-idnr", "IdNr 36 574 261 809", "IdNr 36 574 261 808"),
            ("it-codice-fiscale", "CF RCCMNL83S18D969H", "CF RCCMNL83S18D969A"),
        ],
    )
    def test_national_ids_are_check_digit_checked(self, fmt: str, good: str, bad: str) -> None:
        assert found(DetectorKind.NATIONAL_ID, good, fmt) == [good.split(" ", 1)[1]]
        assert found(DetectorKind.NATIONAL_ID, bad, fmt) == []

    def test_every_format_the_crd_names_exists(self) -> None:
        assert set(get_args(NationalIdFormat)) == set(NATIONAL_IDS)


class TestCustomPatterns:
    def test_named_pattern_and_placeholder(self) -> None:
        detector = custom("employee-id", r"EMP-[0-9]{6}")
        assert detector.label == "regex:employee-id" and detector.placeholder == "<EMPLOYEE_ID>"
        assert list(detector.find("a EMP-123456 b")) == [(2, 12)]

    @pytest.mark.parametrize(
        ("pattern", "says"),
        [
            (r"(a)\1", "not valid RE2 syntax"),
            (r"(?=a)b", "not valid RE2 syntax"),
            (r"x?", "matches the empty string"),
            ("a" * 1025, "at most 1024"),
        ],
    )
    def test_unusable_patterns_are_refused_at_admission(self, pattern: str, says: str) -> None:
        with pytest.raises(ValidationError, match=says):
            GateTag.model_validate({"name": "t", "classifiers": [
                {"type": "content", "detector": "regex", "name": "x", "pattern": pattern}]})  # fmt: skip

    def test_catastrophic_pattern_runs_in_linear_time(self) -> None:
        detector = custom("evil", r"(a+)+b")
        started = time.perf_counter()
        assert list(detector.find("a" * 200_000 + "c")) == []
        assert time.perf_counter() - started < 2.0  # backtracking would take ages

    @pytest.mark.parametrize(
        ("fields", "says"),
        [
            ({"detector": "regex", "pattern": "x"}, "needs both name and pattern"),
            ({"detector": "email", "pattern": "x"}, "for regex detectors"),
            ({"detector": "national-id"}, "format is required"),
            ({"detector": "email", "format": "us-ssn"}, "format is required"),
            ({"detector": "national-id", "format": "xx-id"}, "us-ssn"),
            ({"detector": "dna"}, "email"),
        ],
    )
    def test_fields_must_fit_the_detector(self, fields: dict[str, Any], says: str) -> None:
        with pytest.raises(ValidationError, match=says):
            GateTag.model_validate({"name": "t", "classifiers": [{"type": "content", **fields}]})


class TestAdversarialText:
    """Caught: the disguises normalisation undoes. Not caught: encodings and spellings."""

    @pytest.mark.parametrize(
        ("kind", "text"),
        [
            (DetectorKind.EMAIL, "jаne@exаmple.org"),  # Cyrillic а look-alikes
            (DetectorKind.EMAIL, "ja\u200bne@exam\u200dple.org"),  # zero-width space/joiner
            (DetectorKind.EMAIL, "ｊａｎｅ＠ｅｘａｍｐｌｅ．ｏｒｇ"),  # full-width
            (DetectorKind.EMAIL, "jane\ufe6bexample\u3002org"),  # small @, ideographic stop
            (DetectorKind.PAYMENT_CARD, "４１１１ １１１１ １１１１ １１１１"),  # full-width digits
            (DetectorKind.PAYMENT_CARD, "٤١١١١١١١١١١١١١١١"),  # Arabic-Indic digits
            (DetectorKind.PAYMENT_CARD, "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"),  # split by spaces
            (DetectorKind.PAYMENT_CARD, "4111--1111--1111--1111"),  # split by dashes
            (DetectorKind.PAYMENT_CARD, "4111\u20131111\u20131111\u20131111"),  # en dashes
            (DetectorKind.PAYMENT_CARD, "4111\u00ad1111\u200c1111\u20601111"),  # soft hyphen &c
            (DetectorKind.PHONE, "+44\u00a020\u00a07946\u00a00958"),  # no-break spaces
        ],
    )
    def test_caught(self, kind: DetectorKind, text: str) -> None:
        assert found(kind, f"x {text} y") == [text]

    @pytest.mark.parametrize(
        ("kind", "text"),
        [
            (DetectorKind.EMAIL, base64.b64encode(b"jane@example.org").decode()),
            (DetectorKind.EMAIL, "jane at example dot org"),
            (DetectorKind.PAYMENT_CARD, "4111.1111.1111.1111"),  # dots are not card separators
            (DetectorKind.PAYMENT_CARD, "4111\n1111\n1111\n1111"),
            (DetectorKind.PAYMENT_CARD, "four one one one ..."),
            (DetectorKind.PHONE, "020 7946 0958"),  # national format without +/00
        ],
    )
    def test_not_caught(self, kind: DetectorKind, text: str) -> None:
        assert found(kind, f"x {text} y") == []

    def test_redaction_removes_the_disguise_too(self) -> None:
        inspection, texts = scanner("redact").scan(["to ja\u200bne@ｅｘａｍｐｌｅ.org!"])
        assert texts == ["to <EMAIL>!"] and inspection.redacted == {"email": 1}

    @pytest.mark.parametrize("filler", ["a", "1 ", "4-", "@.", ":", "é", "beef:", "x" * 63 + "@"])
    def test_one_megabyte_is_scanned_in_bounded_time(self, filler: str) -> None:
        every = scanner("tag", "enforce", *[
            {"type": "content", "detector": k} for k in
            ("email", "phone", "payment-card", "iban", "ipv4", "ipv6")])  # fmt: skip
        text = (filler * (1 << 20))[: 1 << 20] + " jane@example.org"
        started = time.perf_counter()
        inspection, _ = every.scan([text])
        assert time.perf_counter() - started < 20.0  # linear: ~0.2-1.5 s/MB per detector
        assert [f.detector for f in inspection.findings] == ["email"]


class TestScanner:
    def request(self, *texts: str, binary: bool = False, **params: Any) -> tuple[Any, int | None]:
        body, length = oip.encode_request(
            {"text": np.array([t.encode() for t in texts], dtype=object),
             "n": np.arange(3, dtype=np.float32)},
            binary=binary, parameters=params or None, id="r1",
        )  # fmt: skip
        return oip.parse_request(body, length), length

    @pytest.mark.parametrize("binary", [False, True])
    def test_redact_rebuilds_the_request_in_its_format(self, binary: bool) -> None:
        head, length = self.request("a@b.io and c@d.io", "none", binary=binary, note="x@y.org")
        inspection = scanner("redact").inspect(head, length)
        assert inspection.redacted == {"email": 3} and inspection.tags == frozenset()
        assert (inspection.header_length is not None) == binary
        assert inspection.body is not None
        request = oip.decode_request(inspection.body, inspection.header_length)
        assert request.inputs["text"].tolist() == [b"<EMAIL> and <EMAIL>", b"none"]
        assert request.inputs["n"].tolist() == [0.0, 1.0, 2.0]
        assert request.parameters == {"note": "<EMAIL>"} and request.id == "r1"

    def test_deny_and_dryrun(self) -> None:
        head, length = self.request("a@b.io")
        denied = scanner("deny").inspect(head, length)
        assert denied.denied is not None and "a@b.io" not in denied.refusal()
        dry = scanner("deny", "dryrun").inspect(head, length)
        assert dry.denied is None and dry.tags == {"pii"}
        assert [f.action for f in dry.findings] == ["dryrun-deny"]
        dry_redact = scanner("redact", "dryrun").inspect(head, length)
        assert dry_redact.body is None and dry_redact.tags == {"pii"}

    def test_non_utf8_bytes_survive_redaction(self) -> None:
        body, length = oip.encode_request(
            {"text": np.array([b"\xff\xfe a@b.io \x80"], dtype=object)}, binary=True
        )  # only the binary extension can carry bytes that are not UTF-8
        inspection = scanner("redact").inspect(oip.parse_request(body, length), length)
        assert inspection.body is not None
        request = oip.decode_request(inspection.body, inspection.header_length)
        assert request.inputs["text"].tolist() == [b"\xff\xfe <EMAIL> \x80"]

    def test_numeric_only_request_is_not_decoded_for_nothing(self) -> None:
        body, length = oip.encode_request({"n": np.arange(3, dtype=np.float32)})
        inspection = scanner("deny").inspect(oip.parse_request(body, length), length)
        assert inspection.findings == []
