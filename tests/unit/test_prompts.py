"""Golden tests: every template renders byte for byte what its published source produces.

The expected strings were written by hand from the sources cited at each test (and
cross-checked by running those sources' prompt functions on the same input).
"""

from __future__ import annotations

import pytest

from rerankd.prompts import Passage, get_template, identifier, permutation_string, template_names
from rerankd.prompts.rank_gpt import RankGPTTemplate
from rerankd.prompts.rank_llm import SingleTurnTemplate
from rerankd.prompts.text import cut_tokens, cut_words, replace_bracket_numbers
from rerankd.types import ChatMessage

QUERY = "how do cats purr"
PASSAGES = [
    Passage(text="Cats purr by vibrating the muscles of the larynx.", title="Purring"),
    Passage(text="The hyoid bone [2] vibrates; see the  figure\nbelow."),
    Passage(
        text="Purring is produced during both inhalation and exhalation, with a consistent pattern "
        "and frequency between 25 and 150 Hertz."
    ),
]
# A small word cut so the third passage is visibly cut in the golden strings; the default
# limits (300 words, ...) are tested separately below.
MAX_WORDS = 12


def _msgs(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=role, content=content) for role, content in pairs]  # type: ignore[arg-type]


def test_registry_names() -> None:
    for name in ("rank_gpt", "rank_zephyr", "rank_zephyr_legacy", "first", "fullrank"):
        assert get_template(name).name == name
    assert set(template_names()) >= {"rank_gpt", "rank_zephyr", "rank_zephyr_legacy", "first", "fullrank"}


def test_unknown_template_lists_known_names() -> None:
    with pytest.raises(ValueError) as err:
        get_template("rank_nope")
    msg = str(err.value)
    assert "rank_nope" in msg
    for name in ("rank_gpt", "rank_zephyr", "rank_zephyr_legacy", "first", "fullrank"):
        assert name in msg


def test_identifiers() -> None:
    assert identifier(0, "numeric") == "1"
    assert identifier(99, "numeric") == "100"
    assert identifier(0, "alpha") == "A"
    assert identifier(25, "alpha") == "Z"
    with pytest.raises(ValueError):
        identifier(26, "alpha")
    with pytest.raises(ValueError):
        identifier(-1, "numeric")
    assert permutation_string(3, "numeric") == "[1] > [2] > [3]"
    assert permutation_string(3, "alpha") == "[A] > [B] > [C]"
    assert get_template("first").identifier == "alpha"
    assert get_template("rank_zephyr").identifier == "numeric"


# --------------------------------------------------------------------------- golden renders


def test_golden_rank_gpt() -> None:
    # sunnweiwei/RankGPT rank_gpt.py (commit 0d62bc38): get_prefix_prompt, get_post_prompt,
    # create_permutation_instruction; passage text as run_retriever builds it.  Note the
    # " \n" in both instructions and that "[2]" inside a passage is left alone.
    expected = _msgs(
        (
            "system",
            "You are RankGPT, an intelligent assistant that can rank passages based on their relevancy to the query.",
        ),
        (
            "user",
            "I will provide you with 3 passages, each indicated by number identifier []. \n"
            "Rank the passages based on their relevance to query: how do cats purr.",
        ),
        ("assistant", "Okay, please provide the passages."),
        ("user", "[1] Title: Purring Content: Cats purr by vibrating the muscles of the larynx."),
        ("assistant", "Received passage [1]."),
        ("user", "[2] The hyoid bone [2] vibrates; see the figure below."),
        ("assistant", "Received passage [2]."),
        ("user", "[3] Purring is produced during both inhalation and exhalation, with a consistent pattern"),
        ("assistant", "Received passage [3]."),
        (
            "user",
            "Search Query: how do cats purr. \n"
            "Rank the 3 passages above based on their relevance to the search query. The passages should "
            "be listed in descending order using identifiers. The most relevant passages should be listed "
            "first. The output format should be [] > [], e.g., [1] > [2]. Only response the ranking "
            "results, do not say any word or explain.",
        ),
    )
    assert get_template("rank_gpt").render(QUERY, PASSAGES, max_words=MAX_WORDS) == expected


def test_golden_rank_zephyr() -> None:
    # castorini/rank_llm src/rank_llm/rerank/prompt_templates/rank_zephyr_template.yaml (commit
    # 1b3cabbc) rendered by singleturn_listwise_inference_handler.py generate_prompt, passages by
    # inference_handler.py _convert_doc_to_prompt_content ("[2]" -> "(2)").
    expected = _msgs(
        (
            "system",
            "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query",
        ),
        (
            "user",
            "I will provide you with 3 passages, each indicated by a numerical identifier []. Rank the "
            "passages based on their relevance to the search query: how do cats purr.\n"
            "[1] Title: Purring Content: Cats purr by vibrating the muscles of the larynx.\n"
            "[2] The hyoid bone (2) vibrates; see the figure below.\n"
            "[3] Purring is produced during both inhalation and exhalation, with a consistent pattern\n"
            "Search Query: how do cats purr.\n"
            "Rank the 3 passages above based on their relevance to the search query. All the passages "
            "should be included and listed using identifiers, in descending order of relevance. The "
            "output format should be [] > [], e.g., [2] > [1], Answer concisely and directly and only "
            "respond with the ranking results, do not say any word or explain.",
        ),
    )
    assert get_template("rank_zephyr").render(QUERY, PASSAGES, max_words=MAX_WORDS) == expected


def test_golden_rank_zephyr_legacy() -> None:
    # castorini/rank_llm src/rank_llm/rerank/listwise/rank_listwise_os_llm.py (commit 417c3898,
    # 2024-12-28): _add_prefix_prompt, _add_post_prompt, create_prompt (variable_passages=True);
    # system message: src/rank_llm/scripts/run_rank_llm.py default (also the training-data
    # system turn in scripts/create_variable_length_samples.py).  Blank line after the prefix.
    expected = _msgs(
        (
            "system",
            "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query.",
        ),
        (
            "user",
            "I will provide you with 3 passages, each indicated by a numerical identifier []. Rank the "
            "passages based on their relevance to the search query: how do cats purr.\n"
            "\n"
            "[1] Title: Purring Content: Cats purr by vibrating the muscles of the larynx.\n"
            "[2] The hyoid bone (2) vibrates; see the figure below.\n"
            "[3] Purring is produced during both inhalation and exhalation, with a consistent pattern\n"
            "Search Query: how do cats purr.\n"
            "Rank the 3 passages above based on their relevance to the search query. All the passages "
            "should be included and listed using identifiers, in descending order of relevance. The "
            "output format should be [] > [], e.g., [2] > [1], Only respond with the ranking results, "
            "do not say any word or explain.",
        ),
    )
    assert get_template("rank_zephyr_legacy").render(QUERY, PASSAGES, max_words=MAX_WORDS) == expected


def test_golden_first() -> None:
    # castorini/rank_llm src/rank_llm/rerank/listwise/rank_listwise_os_llm.py (commit 417c3898)
    # with use_alpha=True, variable_passages=True (README "FirstMistral" command); the same
    # prefix/post prompt as gangiswag/llm-reranker scripts/utils/rank_listwise_os_llm.py
    # (commit 2d7cba42) _add_prefix_prompt/_add_post_prompt ("a alphabetical", sic).
    expected = _msgs(
        (
            "system",
            "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query.",
        ),
        (
            "user",
            "I will provide you with 3 passages, each indicated by a alphabetical identifier []. Rank the "
            "passages based on their relevance to the search query: how do cats purr.\n"
            "\n"
            "[A] Title: Purring Content: Cats purr by vibrating the muscles of the larynx.\n"
            "[B] The hyoid bone (2) vibrates; see the figure below.\n"
            "[C] Purring is produced during both inhalation and exhalation, with a consistent pattern\n"
            "Search Query: how do cats purr.\n"
            "Rank the 3 passages above based on their relevance to the search query. All the passages "
            "should be included and listed using identifiers, in descending order of relevance. The "
            "output format should be [] > [], e.g., [B] > [A], Only respond with the ranking results, "
            "do not say any word or explain.",
        ),
    )
    assert get_template("first").render(QUERY, PASSAGES, max_words=MAX_WORDS) == expected


def test_golden_rank_zephyr_alpha() -> None:
    # castorini/rank_llm src/rank_llm/rerank/prompt_templates/rank_zephyr_alpha_template.yaml
    # (commit 1b3cabbc): what current rank_llm uses for use_alpha.
    expected = _msgs(
        (
            "system",
            "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query",
        ),
        (
            "user",
            "I will provide you with 3 passages, each indicated by an alphabetical identifier []. Rank the "
            "passages based on their relevance to the search query: how do cats purr.\n"
            "[A] Title: Purring Content: Cats purr by vibrating the muscles of the larynx.\n"
            "[B] The hyoid bone (2) vibrates; see the figure below.\n"
            "[C] Purring is produced during both inhalation and exhalation, with a consistent pattern\n"
            "Search Query: how do cats purr.\n"
            "Rank the 3 passages above based on their relevance to the search query. All the passages "
            "should be included and listed using identifiers, in descending order of relevance. The "
            "output format should be [] > [], e.g., [B] > [A], Answer concisely and directly and only "
            "respond with the ranking results, do not say any word or explain.",
        ),
    )
    assert get_template("rank_zephyr_alpha").render(QUERY, PASSAGES, max_words=MAX_WORDS) == expected


def test_golden_fullrank() -> None:
    # 8421BCD/fullrank utils.py (commit 3a532700) add_prefix_prompt / add_post_prompt
    # (PromptMode.RANK_GPT, variable_passages) / convert_doc_to_prompt_content, assembled by
    # rerank/rank_listwise_os_llm.py create_prompt; system message: run_rank_llm.py default.
    expected = _msgs(
        (
            "system",
            "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query.",
        ),
        (
            "user",
            "I will provide you with 3 passages, each indicated by a numerical identifier []. Rank the "
            "passages based on their relevance to the search query: how do cats purr.\n"
            "\n"
            "[1] Title: Purring Content: Cats purr by vibrating the muscles of the larynx.\n"
            "[2] The hyoid bone (2) vibrates; see the figure below.\n"
            "[3] Purring is produced during both inhalation and exhalation, with a consistent pattern\n"
            "Search Query: how do cats purr.\n"
            "Rank the 3 passages above based on their relevance to the search query. All the passages "
            "should be included and listed using identifiers, in descending order of relevance. The "
            "output format should be [] > [], e.g., [2] > [1], Only respond with the ranking results, "
            "do not say any word or explain.",
        ),
    )
    assert get_template("fullrank").render(QUERY, PASSAGES, max_words=MAX_WORDS) == expected


# --------------------------------------------------------------------------- preprocessing details


def _long(n_words: int) -> str:
    return " ".join(f"w{i}" for i in range(n_words))


def _passage_words(content: str) -> int:
    # "[1] w0 w1 ..." or "[A] w0 ..." -> number of words after the identifier
    return len(content.split()) - 1


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("rank_gpt", 3, 300),  # RankGPT create_permutation_instruction: max_length = 300
        ("rank_gpt", 100, 300),
        ("rank_zephyr", 3, 300),  # rank_llm max_passage_words default 300
        ("rank_zephyr", 100, 300),
        ("rank_zephyr_legacy", 20, 300),  # legacy: 300 * (20 / (rank_end - rank_start))
        ("rank_zephyr_legacy", 3, 2000),
        ("rank_zephyr_legacy", 7, 857),
        ("rank_zephyr_legacy", 100, 60),
        ("first", 20, 300),
        ("fullrank", 100, 100),  # fullrank run_rank_llm.sh --max_passage_length 100
        ("fullrank", 3, 100),
    ],
)
def test_default_word_limits(name: str, n: int, expected: int) -> None:
    assert get_template(name).default_max_words(n) == expected


def test_default_word_cut_applied_by_render() -> None:
    passages = [Passage(text=_long(2500))] * 3 + [Passage(text="short one")]
    rg = get_template("rank_gpt").render(QUERY, passages)
    assert rg[3].content == "[1] " + _long(300)
    assert rg[9].content == "[4] short one"
    rz = get_template("rank_zephyr").render(QUERY, passages)[1].content.split("\n")
    assert rz[1] == "[1] " + _long(300)
    legacy = get_template("rank_zephyr_legacy").render(QUERY, passages)[1].content.split("\n")
    assert legacy[2] == "[1] " + _long(int(300 * (20 / 4)))
    fr = get_template("fullrank").render(QUERY, passages)[1].content.split("\n")
    assert _passage_words(fr[2]) == 100


def test_query_number_replacement_and_strip() -> None:
    q = " which [1] cat "
    rg = get_template("rank_gpt").render(q, PASSAGES[:1])
    assert rg[1].content.endswith("query:  which [1] cat .")  # RankGPT: query untouched
    rz = get_template("rank_zephyr").render(q, PASSAGES[:1])[1].content
    assert "search query:  which (1) cat .\n" in rz  # rank_llm: [n] -> (n), not stripped
    fr = get_template("fullrank").render(q, PASSAGES[:1])[1].content
    assert "search query: which (1) cat.\n" in fr  # fullrank: replace_number(query).strip()


def test_empty_and_blank_titles() -> None:
    p_empty = Passage(text="body text", title="")
    p_blank = Passage(text="body text", title="  ")
    # RankGPT: run_retriever's "Title:  Content: " collapses to "Title: Content: " and is removed
    assert get_template("rank_gpt").render(QUERY, [p_empty, p_blank])[3].content == "[1] body text"
    assert get_template("rank_gpt").render(QUERY, [p_empty, p_blank])[5].content == "[2] body text"
    # rank_llm: an empty title is skipped, a blank (truthy) one is kept then whitespace-collapsed
    lines = get_template("rank_zephyr").render(QUERY, [p_empty, p_blank])[1].content.split("\n")
    assert lines[1:3] == ["[1] body text", "[2] Title: Content: body text"]


def test_more_than_26_alpha_passages_rejected() -> None:
    with pytest.raises(ValueError, match="26"):
        get_template("first").render(QUERY, [Passage(text="x")] * 27)


def test_max_tokens_requires_tokenizer() -> None:
    with pytest.raises(ValueError):
        get_template("rank_zephyr").render(QUERY, PASSAGES, max_tokens=3)
    with pytest.raises(ValueError):
        get_template("rank_gpt").render(QUERY, PASSAGES, max_tokens=3)


def test_text_helpers() -> None:
    assert replace_bracket_numbers("see [2] and [10], not [a] or [ 3]") == "see (2) and (10), not [a] or [ 3]"
    assert cut_words("  a  b\n c\td ", 3) == "a b c"
    assert cut_words("a b", 0) == ""


class _WordTokenizer:
    def __init__(self) -> None:
        self.vocab: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for w in text.split():
            if w not in self.vocab:
                self.vocab.append(w)
            ids.append(self.vocab.index(w))
        return ids

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids)


def test_cut_tokens() -> None:
    tok = _WordTokenizer()
    assert cut_tokens("a b c d", 2, tok) == "a b"  # type: ignore[arg-type]
    assert cut_tokens("a  b", 5, tok) == "a  b"  # type: ignore[arg-type]  # not cut: untouched
    assert cut_tokens("a b", 0, tok) == ""  # type: ignore[arg-type]


def test_output_budget_estimate_is_an_upper_bound_shape() -> None:
    # "[1] > [2] > [3]": 3 ids x ("[", digit, "]", " >") + 2 slack
    assert get_template("rank_zephyr").output_budget(3) == 14
    assert get_template("first").output_budget(3) == 14
    assert get_template("rank_gpt").output_budget(0) == 0
    tok = _WordTokenizer()
    assert get_template("rank_zephyr").output_budget(3, tok) == 5  # type: ignore[arg-type]


def test_templates_are_the_expected_classes() -> None:
    assert isinstance(get_template("rank_gpt"), RankGPTTemplate)
    for name in ("rank_zephyr", "rank_zephyr_legacy", "first", "fullrank"):
        assert isinstance(get_template(name), SingleTurnTemplate)
