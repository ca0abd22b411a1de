"""Inbound messages that are an opt-out or opt-in keyword, and those that only contain one."""

from __future__ import annotations

import pytest
from contacts.domain.model import ContactValidationError
from contacts.domain.optout import (
    DEFAULT_OPT_IN_KEYWORDS,
    DEFAULT_OPT_OUT_KEYWORDS,
    ConsentIntent,
    ConsentKeywords,
    KeywordMatch,
    keyword_key,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

DEFAULTS = ConsentKeywords()


@pytest.mark.parametrize(
    ("message", "keyword"),
    [
        ("SAIR", "SAIR"),
        ("sair", "SAIR"),
        ("Sair.", "SAIR"),
        (" parar!!", "PARAR"),
        ("Parar\n", "PARAR"),
        ("STOP", "STOP"),
        ("*STOP*", "STOP"),
        ("_cancelar_", "CANCELAR"),
        ("Cancelar 🙏", "CANCELAR"),
        ("🙏🏽 cancelar", "CANCELAR"),
        ("¡descadastrar!", "DESCADASTRAR"),
        ("DESCADASTRÁR", "DESCADASTRAR"),
        ("remover...", "REMOVER"),
        ("não quero", "NÃO QUERO"),
        ("NAO   QUERO!", "NÃO QUERO"),
        ("“Sair”", "SAIR"),
    ],
)
def test_a_message_that_is_an_opt_out_keyword_opts_out(message: str, keyword: str) -> None:
    assert DEFAULTS.match(message) == KeywordMatch(ConsentIntent.OPT_OUT, keyword)


@pytest.mark.parametrize("message", ["VOLTAR", "voltar!", "Assinar 👍", " start "])
def test_a_message_that_is_an_opt_in_keyword_opts_in(message: str) -> None:
    match = DEFAULTS.match(message)
    assert match is not None
    assert match.intent is ConsentIntent.OPT_IN


@pytest.mark.parametrize(
    "message",
    [
        "não quero sair agora",
        "sair por favor",
        "quero sair",
        "pode parar de mandar?",
        "STOP STOP",
        "sairei",
        "s a i r",
        "sa-ir",
        "",
        "   ",
        "🙏",
        "!!!",
        "Bom dia, gostaria de cancelar meu pedido",
    ],
)
def test_a_message_merely_containing_a_keyword_is_not_a_keyword(message: str) -> None:
    assert DEFAULTS.match(message) is None


def test_keyword_key_folds_case_accents_and_strips_ends() -> None:
    assert keyword_key("  *Não   Quero* 🙏 ") == "nao quero"
    assert keyword_key("🙏") == ""


def test_company_keywords_replace_the_defaults() -> None:
    keywords = ConsentKeywords(opt_out=["chega", "Não Perturbe"], opt_in=["Quero Voltar"])
    assert keywords.match("CHEGA!") == KeywordMatch(ConsentIntent.OPT_OUT, "chega")
    assert keywords.match("nao perturbe") == KeywordMatch(ConsentIntent.OPT_OUT, "Não Perturbe")
    assert keywords.match("quero voltar") == KeywordMatch(ConsentIntent.OPT_IN, "Quero Voltar")
    assert keywords.match("SAIR") is None


def test_repeated_keywords_keep_their_first_spelling() -> None:
    keywords = ConsentKeywords(opt_out=["Sair", "SAIR", " sair "], opt_in=[])
    assert keywords.opt_out_keywords == ("Sair",)
    assert keywords.opt_in_keywords == ()


def test_an_empty_list_turns_that_intent_off() -> None:
    keywords = ConsentKeywords(opt_in=[])
    assert keywords.match("VOLTAR") is None
    assert keywords.match("SAIR") is not None


def test_defaults_are_exposed_as_configured() -> None:
    assert DEFAULTS.opt_out_keywords == DEFAULT_OPT_OUT_KEYWORDS
    assert DEFAULTS.opt_in_keywords == DEFAULT_OPT_IN_KEYWORDS


def test_a_keyword_in_both_lists_is_rejected() -> None:
    with pytest.raises(ContactValidationError) as caught:
        ConsentKeywords(opt_out=["SAIR"], opt_in=["sáir"])
    assert caught.value.field == "opt_in_keywords"
    assert caught.value.message == "'sáir' is also an opt-out keyword"


def test_invalid_keywords_are_all_reported() -> None:
    with pytest.raises(ContactValidationError) as caught:
        ConsentKeywords(opt_out=["!!!", "x" * 41], opt_in=["🙏"])
    assert [(issue.field, issue.code) for issue in caught.value.issues] == [
        ("opt_out_keywords", "invalid"),
        ("opt_out_keywords", "too_long"),
        ("opt_in_keywords", "invalid"),
    ]


def test_too_many_keywords_are_rejected() -> None:
    with pytest.raises(ContactValidationError, match="more than 50 keywords"):
        ConsentKeywords(opt_out=[f"sair{n}" for n in range(51)])


def test_long_messages_are_never_keywords() -> None:
    assert DEFAULTS.match("SAIR" + " " * 300) is None


_decoration = st.text(st.sampled_from(" .,!?*_~🙏👍🏽\n\t\"'"), max_size=5)


@given(st.sampled_from(DEFAULT_OPT_OUT_KEYWORDS), _decoration, _decoration, st.booleans())
def test_any_decoration_around_a_keyword_still_matches(
    keyword: str, before: str, after: str, lower: bool
) -> None:
    written = keyword.lower() if lower else keyword
    match = DEFAULTS.match(before + written + after)
    assert match == KeywordMatch(ConsentIntent.OPT_OUT, keyword)


@given(st.sampled_from(DEFAULT_OPT_OUT_KEYWORDS), st.sampled_from(["eu", "quero", "agora", "já"]))
def test_a_keyword_with_another_word_never_matches(keyword: str, word: str) -> None:
    assert DEFAULTS.match(f"{word} {keyword}") is None
    assert DEFAULTS.match(f"{keyword} {word}") is None
