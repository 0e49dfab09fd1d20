"""Personal data out of complaint text, replaced by typed placeholders before anything else reads it.

Manifests are read through :func:`redact` (``data.redact``, on by default), so
tokenizers, the TF-IDF vocabulary, caches, logs, reports and prediction files
only ever see ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[CN_ID]`` and
``[URL]``. Numbers are only replaced when they check out: card numbers by a
card prefix and the Luhn digit, IBANs by ISO 13616's mod-97, Chinese resident
ID numbers by their GB 11643 check digit and birth date, phone numbers by the
``phonenumbers`` library (international and Chinese formats), so that order
numbers, dates and prices stay.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from collections.abc import Iterable

import phonenumbers

PII_TYPES = ("URL", "EMAIL", "IBAN", "CARD", "CN_ID", "PHONE")  # also the order they are looked for in
PHONE_REGIONS = ("CN", "US", "GB")  # how numbers without a country code are read

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'，。；！？）」》]+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_CN_ID = re.compile(r"(?<!\d)\d{17}[\dXx](?![\dXx])")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|65|62|35)")
_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def cn_id_valid(candidate: str) -> bool:
    body, check = candidate[:17], candidate[17].upper()
    expected = "10X98765432"[sum(int(d) * w for d, w in zip(body, _CN_ID_WEIGHTS)) % 11]
    if check != expected:
        return False
    try:
        datetime.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return False
    return 1900 <= int(body[6:10]) <= datetime.date.today().year


def _card(match: re.Match) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


_CHECKS = {
    "URL": (_URL, None),
    "EMAIL": (_EMAIL, None),
    "IBAN": (_IBAN, lambda m: iban_valid(m.group())),
    "CARD": (_CARD, _card),
    "CN_ID": (_CN_ID, lambda m: cn_id_valid(m.group())),
}


_DIGIT_RUN = re.compile(r"\+?\d[\d\s().-]{5,}\d")
MIN_PHONE_DIGITS = 7  # shorter numbers are not looked at as phone numbers
MIN_DIGITS = {"IBAN": 2, "CARD": 13, "CN_ID": 17, "PHONE": MIN_PHONE_DIGITS}  # the fewest each pattern matches
_DIGIT = re.compile(r"\d")


def _may_hold(kind: str, text: str, digits: int) -> bool:
    """False when ``text`` cannot hold a ``kind`` (a cheap look before its pattern): the literal a URL or an
    e-mail address needs, or the digits a number needs (``digits``: how many the text had before any
    replacement, which only removes digits)."""
    if kind == "URL":
        return "://" in text or "www." in text.lower()
    if kind == "EMAIL":
        return "@" in text
    return digits >= MIN_DIGITS[kind]


def _phone_spans(text: str) -> list[tuple[int, int]]:
    if not any(sum(c.isdigit() for c in m.group()) >= MIN_PHONE_DIGITS for m in _DIGIT_RUN.finditer(text)):
        return []  # the matcher is slow, and most texts hold no number that long
    spans = set()
    for region in PHONE_REGIONS:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            spans.add((match.start, match.end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def redact(text: str, types: Iterable[str] = PII_TYPES) -> tuple[str, Counter]:
    """``text`` with each personal datum of ``types`` replaced by ``[TYPE]``, and how many of each."""
    found = Counter()
    wanted = set(types)
    digits = len(_DIGIT.findall(text))
    for kind in PII_TYPES:
        if kind not in wanted or not _may_hold(kind, text, digits):
            continue
        if kind == "PHONE":
            spans = _phone_spans(text)
            for start, end in reversed(spans):
                text = text[:start] + "[PHONE]" + text[end:]
            if spans:
                found[kind] += len(spans)
            continue
        pattern, check = _CHECKS[kind]

        def replace(m: re.Match, kind=kind, check=check) -> str:
            if check is not None and not check(m):
                return m.group()
            found[kind] += 1
            return f"[{kind}]"

        text = pattern.sub(replace, text)
    return text, found


def check_types(types: Iterable[str]) -> tuple[str, ...]:
    unknown = sorted(set(types) - set(PII_TYPES))
    if unknown:
        raise ValueError(f"data.redact_types: unknown {unknown}; known: {list(PII_TYPES)}")
    return tuple(t for t in PII_TYPES if t in set(types))
