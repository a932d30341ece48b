"""Content detectors: find personal data in a request's text, whatever its headers say.

Each detector finds spans of one kind of data in a string. Text is first *normalised* so the
usual disguises do not hide a match (:func:`normalize`): NFKC (full-width digits and letters,
the small and full-width ``@``), every Unicode decimal digit read as its ASCII digit (Arabic-
Indic, Devanagari, ...), ideographic and full-width full stops read as ``.``, Unicode dashes
and minus signs as ``-``, and format characters (zero-width space, joiner and non-joiner, word
joiner, BOM, soft hyphen, bidi controls: category ``Cf``) and variation selectors dropped.
Spans are reported in the *original* string, so a redaction removes the disguise too.

The built-in detectors are regular expressions with bounded or unambiguous repetition run by
Python's :mod:`re` (linear in the text on every input, and ~5x faster per match than RE2's
bindings), each candidate then checked where a checksum exists: payment cards by Luhn,
IBANs by ISO 13616 mod 97 (both from ``python-stdnum``), national IDs by their own check
digits (``python-stdnum`` again), IP addresses by :mod:`ipaddress`. Gate authors' own
patterns run on RE2 (``google-re2``): linear time whatever the pattern, so no pattern can
backtrack catastrophically on a hostile input; patterns RE2 cannot compile (backreferences,
lookaround) are refused when the gate is admitted.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import re2
from stdnum import iban, luhn
from stdnum.de import idnr
from stdnum.es import dni
from stdnum.iso7064 import mod_97_10
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.us import ssn

from modulemesh.api.gate import DetectorKind

__all__ = [
    "NATIONAL_IDS",
    "Detector",
    "DetectorKind",
    "PatternError",
    "builtin",
    "compile_pattern",
    "custom",
    "normalize",
]


class PatternError(ValueError):
    """A gate's custom pattern that cannot be used; the message says why."""


# -- normalisation ----------------------------------------------------------------------------

_DOTS = {"\u3002": ".", "\uff0e": ".", "\uff61": ".", "\u2024": ".", "\ufe52": "."}
_DASHES = dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d", "-")
_SPACES = dict.fromkeys("\u00a0\u2007\u202f\u3000\u2000\u2001\u2002\u2003\u2004\u2005", " ")
_MAP = {**_DOTS, **_DASHES, **_SPACES}


def _fold(ch: str) -> str:
    """What one non-ASCII character reads as for detection ('' when it is dropped)."""
    if ch in _MAP:
        return _MAP[ch]
    category = unicodedata.category(ch)
    if category == "Cf" or "\ufe00" <= ch <= "\ufe0f":
        return ""
    if category == "Nd":
        return str(unicodedata.decimal(ch))
    folded = unicodedata.normalize("NFKC", ch)
    return "".join(_MAP.get(c, c) for c in folded)


def normalize(text: str) -> tuple[str, list[int] | None]:
    """``text`` as detectors read it, and where each of its characters came from.

    The map is ``None`` for ASCII text (nothing to fold: the common case costs one scan);
    otherwise ``index[i]`` is the position in ``text`` of the character that produced
    character ``i`` of the result.
    """
    if text.isascii():
        return text, None
    out: list[str] = []
    index: list[int] = []
    cache: dict[str, str] = {}
    for position, ch in enumerate(text):
        if ch < "\x80":
            out.append(ch)
            index.append(position)
            continue
        folded = cache.get(ch)
        if folded is None:
            folded = cache[ch] = _fold(ch)
        for piece in folded:
            out.append(piece)
            index.append(position)
    return "".join(out), index


# -- detectors --------------------------------------------------------------------------------

Finder = Callable[[str], Iterator[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class Detector:
    """One compiled detector: ``label`` names it in errors, explain output and audit records
    (``email``, ``national-id:us-ssn``, ``regex:employee-id``); ``placeholder`` replaces what
    it finds when its tag redacts."""

    label: str
    placeholder: str
    find: Finder
    """Spans ``(start, end)`` in *normalised* text, left to right, not overlapping."""


def _regex_finder(
    pattern: str, check: Callable[[str], bool] | None = None, needs: str = ""
) -> Finder:
    """Matches of ``pattern`` that ``check`` accepts; text without ``needs`` is skipped."""
    compiled = re.compile(pattern)

    def find(text: str) -> Iterator[tuple[int, int]]:
        if needs and needs not in text:
            return
        for match in compiled.finditer(text):
            if check is None or check(match.group()):
                yield match.span()

    return find


# Every pattern starts with a literal or a character class, never a lookbehind: Python's
# engine then skips straight to positions where that first character occurs (a leading
# lookbehind is tried at every position: 5-20x slower on prose). Context before the first
# character is checked by a lookbehind placed just after it.

_DOMAIN = re.compile(r"@[\w\-]{1,63}(?:\.[\w\-]{1,63}){0,8}\.[^\W\d_]{2,63}(?![\w\-])")
_LOCAL = re.compile(r"[\w.%+\-]+")


def _email_find(text: str) -> Iterator[tuple[int, int]]:
    """Addresses, found from their ``@domain.tld`` (Unicode-aware ``\\w``, so look-alike
    letters still make an address); the local part is the run of local-part characters just
    before the ``@``, at most 64 of them (read backwards over a reversed 64-character window,
    so each ``@`` costs a bounded amount)."""
    if "@" not in text:
        return
    for match in _DOMAIN.finditer(text):
        at = match.start()
        local = _LOCAL.match(text[max(0, at - 64) : at][::-1])
        if local is not None:
            yield at - local.end(), match.end()


_PHONES = tuple(
    re.compile(pattern)
    for pattern in (
        r"\+(?<![\w+]\+)[1-9](?:[ \-.]?\(?\d\)?){6,16}(?!\d)",
        r"0(?<![\w+]0)0[1-9](?:[ \-.]?\(?\d\)?){6,16}(?!\d)",
        r"\((?<![\w(]\()\d{3}\)\s?\d{3}[ \-.]\d{4}(?!\d)",
        r"\d(?<![\w(]\d)\d{2}[ \-.]\d{3}[ \-.]\d{4}(?!\d)",
    )
)
"""International numbers written with ``+`` or ``00`` (8 to 17 digits, any of space, dash, dot
or parentheses between them), and North American ``(202) 555-0143`` / ``202-555-0143``."""


def _phone_find(text: str) -> Iterator[tuple[int, int]]:
    spans = sorted(
        match.span()
        for pattern in _PHONES
        for match in pattern.finditer(text)
        if 8 <= sum(ch.isdigit() for ch in match.group()) <= 17
    )
    end = -1
    for start, stop in spans:
        if start >= end:
            yield start, stop
            end = stop


_CARD = r"\d(?<!\d\d)(?:[ \-]{0,2}\d){12,30}(?!\d)"
_IBAN = r"\d(?<=(?<![a-zA-Z0-9])[a-zA-Z]{2}\d)\d(?: ?[a-zA-Z0-9]){11,40}(?![a-zA-Z0-9])"
"""Found from its check digits; the two letters of the country code before them are part of
the match (``back=2`` below)."""
_IPV4 = r"\d(?<![\d.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\.?\d)"
_HEX_COLON = frozenset("0123456789abcdefABCDEF:.")


_HEX_RUN = re.compile(r"[0-9a-fA-F:.]*")


def _ipv6_find(text: str) -> Iterator[tuple[int, int]]:
    """Addresses, found from their colons: the whole run of hex digits, colons and dots
    around one (at most 45 characters, the longest textual IPv6 address), checked by
    :mod:`ipaddress`; the search goes on after the run, so each character is read a bounded
    number of times."""
    colon = text.find(":")
    size = len(text)
    while colon >= 0:
        run = _HEX_RUN.match(text, colon)
        end = run.end() if run is not None else colon + 1
        start = colon
        while start > 0 and text[start - 1] in _HEX_COLON and colon - start <= 45:
            start -= 1
        token = text[start:end].rstrip(".")
        before = text[start - 1] if start else " "
        after = text[start + len(token)] if start + len(token) < size else " "
        if (
            len(token) <= 45
            and not (before.isalnum() or before in ":._")
            and not (after.isalnum() or after in ":_")
            and _ipv6_ok(token)
        ):
            yield start, start + len(token)
        colon = text.find(":", end)


_MAX_GROUPS = 8
"""Candidates with more separator-delimited groups are checked whole, not window by window."""


def _groups_find(
    pattern: str,
    valid: Callable[[str], bool],
    separators: str,
    minimum: int,
    maximum: int,
    back: int = 0,
) -> Finder:
    """Candidates split into separator-delimited groups; the longest run of whole groups
    (``minimum`` to ``maximum`` characters once separators are removed) that ``valid`` accepts
    is the hit, so a card number after an unrelated number, or an IBAN followed by a word,
    is still found. ``back``: characters before the match that belong to the candidate."""
    compiled = re.compile(pattern)
    split = re.compile(f"[{re.escape(separators)}]+")
    group = re.compile(f"[^{re.escape(separators)}]+")

    def find(text: str) -> Iterator[tuple[int, int]]:
        for match in compiled.finditer(text):
            start, stop = match.start() - back, match.end()
            candidate = text[start:stop]
            groups = [(start + m.start(), start + m.end()) for m in group.finditer(candidate)]
            if len(groups) == 1 or len(groups) > _MAX_GROUPS:
                # One unbroken run: all of it or nothing (a 40-digit run is not a card).
                # Digits spread one or two to a group: the whole run only (see the docs),
                # which keeps the work per candidate constant on hostile input.
                compact = split.sub("", candidate)
                if minimum <= len(compact) <= maximum and valid(compact):
                    yield start, stop
                continue
            best: tuple[int, int] | None = None
            for i in range(len(groups)):
                for j in range(len(groups) - 1, i - 1, -1):
                    s, e = groups[i][0], groups[j][1]
                    if best is not None and e - s <= best[1] - best[0]:
                        break
                    compact = split.sub("", text[s:e])
                    if minimum <= len(compact) <= maximum and valid(compact):
                        best = (s, e)
                        break
            if best is not None:
                yield best

    return find


@functools.lru_cache(maxsize=4096)
def _card_ok(digits: str) -> bool:
    # Luhn alone passes one in ten random numbers; real card numbers start with 2-6. Cached:
    # the same number recurs within a stream of requests.
    return digits[0] in "23456" and luhn.is_valid(digits)


@functools.lru_cache(maxsize=4096)
def _iban_ok(compact: str) -> bool:
    # The mod-97 check first (cheap, passes 1 in 97 candidates); only then the country's
    # length and structure, whose lookup in python-stdnum's registry costs ~1 ms.
    number = compact.upper()
    return bool(mod_97_10.is_valid(number[4:] + number[:4]) and iban.is_valid(number))


def _ipv4_ok(found: str) -> bool:
    try:
        ipaddress.IPv4Address(found)
    except ValueError:
        return False
    return True


def _ipv6_ok(found: str) -> bool:
    if found.count(":") < 2 or found.strip(":") == "":
        return False
    try:
        ipaddress.IPv6Address(found)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NationalId:
    """A national identifier format: how it is written and how its check digits are checked."""

    description: str
    pattern: str
    valid: Callable[[str], bool]


NATIONAL_IDS: dict[str, NationalId] = {
    "us-ssn": NationalId(
        "US Social Security number (AAA-GG-SSSS, dashes or spaces optional; invalid areas "
        "000, 666 and 9xx, group 00 and serial 0000 excluded)",
        r"\d(?<![\d-]\d)\d{2}[ \-]?\d{2}[ \-]?\d{4}(?![\d-])",
        lambda s: bool(ssn.is_valid(s.replace(" ", "-") if " " in s else s)),
    ),
    "nl-bsn": NationalId(
        "Dutch citizen service number (9 digits, 11-check)",
        r"\d(?<![\d.]\d)\d{3}\.?\d{2}\.?\d{3}(?![\d.]?\d)",
        lambda s: bool(bsn.is_valid(s)),
    ),
    "de-idnr": NationalId(
        "German tax identification number (11 digits, ISO 7064 check digit)",
        r"\d(?<!\d\d)\d ?\d{3} ?\d{3} ?\d{3}(?!\d)",
        lambda s: bool(idnr.is_valid(s)),
    ),
    "es-dni": NationalId(
        "Spanish DNI (8 digits and a check letter)",
        r"\d(?<!\w\d)\d{7}-?[a-zA-Z](?!\w)",
        lambda s: bool(dni.is_valid(s.upper())),
    ),
    "it-codice-fiscale": NationalId(
        "Italian codice fiscale (16 characters, check letter)",
        r"(?i)(?<![\w])[a-z]{6}[0-9lmnpqrstuv]{2}[a-z][0-9lmnpqrstuv]{2}[a-z][0-9lmnpqrstuv]{3}"
        r"[a-z](?!\w)",
        lambda s: bool(codicefiscale.is_valid(s.upper())),
    ),
}
"""The national ID formats a ``national-id`` detector can name (``format``)."""

_PLACEHOLDERS = {
    DetectorKind.EMAIL: "<EMAIL>",
    DetectorKind.PHONE: "<PHONE>",
    DetectorKind.PAYMENT_CARD: "<PAYMENT_CARD>",
    DetectorKind.IBAN: "<IBAN>",
    DetectorKind.IPV4: "<IP_ADDRESS>",
    DetectorKind.IPV6: "<IP_ADDRESS>",
    DetectorKind.NATIONAL_ID: "<NATIONAL_ID>",
}

_BUILTIN: dict[DetectorKind, Finder] = {
    DetectorKind.EMAIL: _email_find,
    DetectorKind.PHONE: _phone_find,
    DetectorKind.PAYMENT_CARD: _groups_find(_CARD, _card_ok, " -", 13, 19),
    DetectorKind.IBAN: _groups_find(_IBAN, _iban_ok, " ", 15, 34, back=2),
    DetectorKind.IPV4: _regex_finder(_IPV4, _ipv4_ok, needs="."),
    DetectorKind.IPV6: _ipv6_find,
}


def builtin(kind: DetectorKind, national_id: str | None = None) -> Detector:
    """The built-in detector of ``kind`` (``national_id`` names the format for that kind)."""
    if kind is DetectorKind.NATIONAL_ID:
        if national_id not in NATIONAL_IDS:
            raise PatternError(
                f"unknown national ID format {national_id!r}; known: {sorted(NATIONAL_IDS)}"
            )
        spec = NATIONAL_IDS[national_id]
        return Detector(
            f"national-id:{national_id}",
            _PLACEHOLDERS[kind],
            _regex_finder(spec.pattern, spec.valid),
        )
    if kind is DetectorKind.REGEX:
        raise PatternError("a regex detector needs a pattern: use custom()")
    return Detector(kind.value, _PLACEHOLDERS[kind], _BUILTIN[kind])


MAX_PATTERN = 1024
"""Longest custom pattern accepted (characters)."""

_RE2_MEMORY = 8 << 20
"""Memory RE2 may use for one compiled pattern; a pattern needing more is refused."""


def compile_pattern(pattern: str) -> re2._Regexp:
    """Compile a gate's custom pattern with RE2, or raise :class:`PatternError` saying why.

    Refused: longer than :data:`MAX_PATTERN`, not RE2 syntax (backreferences, lookaround),
    needing more than 8 MiB of automaton, or matching the empty string (it would match
    everywhere)."""
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"pattern is {len(pattern)} characters; at most {MAX_PATTERN}")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MEMORY
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise PatternError(f"pattern {pattern!r} is not valid RE2 syntax: {detail}") from None
    if compiled.search("") is not None:
        raise PatternError(f"pattern {pattern!r} matches the empty string")
    return compiled


def custom(name: str, pattern: str) -> Detector:
    """A gate's own pattern as a detector named ``regex:<name>``, placeholder ``<NAME>``."""
    compiled = compile_pattern(pattern)

    def find(text: str) -> Iterator[tuple[int, int]]:
        for match in compiled.finditer(text):
            if match.end() > match.start():
                yield match.span()

    placeholder = "<" + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") + ">"
    return Detector(f"regex:{name}", placeholder, find)
