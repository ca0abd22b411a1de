"""Opt-out and opt-in keywords of inbound WhatsApp messages.

A contact who answers a campaign with ``SAIR`` must stop receiving campaigns (and one who
later sends ``VOLTAR`` may receive them again). Each company configures its own keywords;
:data:`DEFAULT_OPT_OUT_KEYWORDS` and :data:`DEFAULT_OPT_IN_KEYWORDS` apply otherwise.

The matching rule: **the whole message is the keyword**, ignoring

* case and accents (``sair``, ``Sair``, ``SAIR``; ``não quero``, ``NAO QUERO``),
* whitespace, punctuation, symbols and emoji before and after it (``" parar!!"``,
  ``"Sair."``, ``"*STOP*"`` in WhatsApp bold, ``"Cancelar 🙏"``, ``"👍 voltar"``),
* runs of whitespace inside a keyword of several words (``"não   quero"``).

A message that merely contains a keyword among other words (``"não quero sair agora"``,
``"sair por favor"``) is *not* a match. The rule is deliberately strict: a false opt-out
silently removes a customer from campaigns they did not leave, while a missed one is a
message in a ticket that an agent reads and can act on. Emoji around the keyword are
tolerated because people add them as courtesy without changing what they ask for.

Opting out suppresses campaign messages only; conversations in tickets go on.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from contacts.domain.model import ContactValidationError, FieldIssue, IssueCode, fold

DEFAULT_OPT_OUT_KEYWORDS: Final = (
    "SAIR",
    "PARAR",
    "STOP",
    "CANCELAR",
    "DESCADASTRAR",
    "REMOVER",
    "UNSUBSCRIBE",
    "NÃO QUERO",
)
DEFAULT_OPT_IN_KEYWORDS: Final = ("VOLTAR", "ASSINAR", "START")

KEYWORD_MAX_LENGTH: Final = 40
MAX_KEYWORDS: Final = 50
#: Messages longer than this are never keywords, so they are not normalized at all.
_MAX_MESSAGE_LENGTH: Final = 200


class ConsentIntent(StrEnum):
    """What a keyword message asks for."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


class ConsentSource(StrEnum):
    """Where an opt-out or opt-in came from, as consumers of the consent events see it."""

    #: A call of the contacts API (an agent or an integrator).
    API = "api"
    #: An inbound WhatsApp message that is an opt-out or opt-in keyword.
    INBOUND_KEYWORD = "inbound_keyword"
    #: A row of a contact import.
    IMPORT = "import"


@dataclass(frozen=True, slots=True)
class KeywordMatch:
    """A message that is a keyword: what it asks for, and the configured keyword (as the
    company wrote it) that it matched, e.g. for the opt-out reason."""

    intent: ConsentIntent
    keyword: str


def _is_word_character(char: str) -> bool:
    return unicodedata.category(char)[0] in "LN"


def keyword_key(text: str) -> str:
    """The form in which messages and keywords are compared.

    Case and accents folded, everything that is not a letter or digit stripped from both
    ends, inner whitespace runs made one space: ``keyword_key(" Cancelar 🙏") ==
    "cancelar"``. Empty when ``text`` has no letter or digit.
    """
    folded = fold(text)
    start, end = 0, len(folded)
    while start < end and not _is_word_character(folded[start]):
        start += 1
    while end > start and not _is_word_character(folded[end - 1]):
        end -= 1
    return " ".join(folded[start:end].split())


def _keyword_table(
    field_name: str, keywords: Iterable[str], issues: list[FieldIssue]
) -> dict[str, str]:
    """Keywords by their key, first spelling kept; invalid ones reported in ``issues``."""
    table: dict[str, str] = {}
    for keyword in keywords:
        key = keyword_key(keyword)
        if not key:
            issues.append(
                FieldIssue(field_name, IssueCode.INVALID, f"{keyword!r} has no letter or digit")
            )
        elif len(key) > KEYWORD_MAX_LENGTH:
            issues.append(
                FieldIssue(
                    field_name,
                    IssueCode.TOO_LONG,
                    f"{keyword!r} is longer than {KEYWORD_MAX_LENGTH} characters",
                )
            )
        else:
            table.setdefault(key, keyword.strip())
    if len(table) > MAX_KEYWORDS:
        issues.append(
            FieldIssue(field_name, IssueCode.TOO_MANY, f"more than {MAX_KEYWORDS} keywords")
        )
    return table


class ConsentKeywords:
    """A company's opt-out and opt-in keywords, and the matcher of inbound messages.

    Raises ContactValidationError (fields ``opt_out_keywords`` / ``opt_in_keywords``) on a
    keyword without letters or digits, one longer than ``KEYWORD_MAX_LENGTH``, more than
    ``MAX_KEYWORDS`` per list, or a keyword in both lists (after case and accent folding).
    Either list may be empty, which turns that intent off.
    """

    def __init__(
        self,
        opt_out: Iterable[str] = DEFAULT_OPT_OUT_KEYWORDS,
        opt_in: Iterable[str] = DEFAULT_OPT_IN_KEYWORDS,
    ) -> None:
        issues: list[FieldIssue] = []
        self._opt_out = _keyword_table("opt_out_keywords", opt_out, issues)
        self._opt_in = _keyword_table("opt_in_keywords", opt_in, issues)
        for key in sorted(self._opt_out.keys() & self._opt_in.keys()):
            issues.append(
                FieldIssue(
                    "opt_in_keywords",
                    IssueCode.INVALID,
                    f"{self._opt_in[key]!r} is also an opt-out keyword",
                )
            )
        if issues:
            raise ContactValidationError(*issues)

    @property
    def opt_out_keywords(self) -> tuple[str, ...]:
        """The opt-out keywords as configured, without repeats."""
        return tuple(self._opt_out.values())

    @property
    def opt_in_keywords(self) -> tuple[str, ...]:
        """The opt-in keywords as configured, without repeats."""
        return tuple(self._opt_in.values())

    def match(self, message: str) -> KeywordMatch | None:
        """The keyword ``message`` is (see the module's rule), or None."""
        if len(message) > _MAX_MESSAGE_LENGTH:
            return None
        key = keyword_key(message)
        if key in self._opt_out:
            return KeywordMatch(ConsentIntent.OPT_OUT, self._opt_out[key])
        if key in self._opt_in:
            return KeywordMatch(ConsentIntent.OPT_IN, self._opt_in[key])
        return None
