"""ggufd.engine.reasoning_budget.ReasoningBudget: which generated tokens are reasoning, and when the
close is due, however the text is split into pieces."""

from __future__ import annotations

import pytest

from ggufd.engine.reasoning_budget import ReasoningBudget
from ggufd.types import ReasoningSyntax

THINK = ReasoningSyntax("<think>", "</think>")
OPENED = ReasoningSyntax("<think>", "</think>", opened=True)


def due_after(budget: ReasoningBudget, pieces: list[str]) -> list[bool]:
    return [budget.feed(piece) for piece in pieces]


def test_an_opened_reasoning_counts_from_the_first_token():
    budget = ReasoningBudget(OPENED, 3)
    assert not budget.due and not budget.done
    assert due_after(budget, ["Let", " me", " think"]) == [False, False, True]
    assert budget.used == 3
    budget.closed()
    assert budget.done and not budget.due


def test_a_budget_of_0_in_an_opened_reasoning_is_due_before_any_token():
    budget = ReasoningBudget(OPENED, 0)
    assert budget.due


def test_a_negative_budget_counts_as_0():
    assert ReasoningBudget(OPENED, -5).due


def test_not_opened_counts_after_the_token_that_completes_the_start_marker():
    budget = ReasoningBudget(THINK, 2)
    assert due_after(budget, ["\n", "<th", "ink", ">", "a", "b"]) == [False, False, False, False, False, True]
    assert budget.used == 2


def test_a_budget_of_0_not_opened_is_due_once_the_start_marker_is_written():
    budget = ReasoningBudget(THINK, 0)
    assert not budget.due
    assert due_after(budget, ["<think", ">"]) == [False, True]


def test_text_after_the_start_marker_in_the_same_token_is_looked_at():
    budget = ReasoningBudget(THINK, 5)
    assert due_after(budget, ["<think>Hm</thi", "nk>"]) == [False, False]
    assert budget.done


def test_a_whole_reasoning_in_one_token():
    budget = ReasoningBudget(THINK, 0)
    assert budget.feed("  <think>short</think>answer") is False
    assert budget.done


@pytest.mark.parametrize(
    "pieces",
    [
        ["Hm", "</think>"],
        ["Hm", "</", "think", ">"],
        ["Hm<", "/th", "ink>\n\nThe answer"],
        ["Hm", "<", "/", "t", "h", "i", "n", "k", ">"],
    ],
)
def test_the_end_marker_written_before_the_budget_ends_the_tracking(pieces):
    budget = ReasoningBudget(OPENED, 100)
    assert not any(due_after(budget, pieces))
    assert budget.done
    assert not any(due_after(budget, ["more"] * 200))  # never due afterwards
    assert budget.used == len(pieces)


def test_the_end_marker_in_the_token_that_spends_the_budget_needs_no_close():
    budget = ReasoningBudget(OPENED, 2)
    assert due_after(budget, ["Hm", "</think>"]) == [False, False]
    assert budget.done


def test_a_partial_end_marker_does_not_close():
    budget = ReasoningBudget(OPENED, 3)
    assert due_after(budget, ["a", "</thi", "nk"]) == [False, False, True]


def test_no_start_marker_ever_no_budget():
    budget = ReasoningBudget(THINK, 1)
    assert due_after(budget, ["The", " answer", " is", " <think>", " 4"]) == [False] * 5
    assert budget.done  # the answer began with other text: nothing more to look at
    assert budget.used == 0


def test_whitespace_before_the_start_marker_is_skipped():
    budget = ReasoningBudget(THINK, 1)
    assert due_after(budget, ["\n", " \n", "<think>", "x"]) == [False, False, False, True]


def test_a_start_that_is_not_the_marker_after_all():
    budget = ReasoningBudget(THINK, 1)
    assert due_after(budget, ["<th", "ing>", "x", "y"]) == [False, False, False, False]
    assert budget.done


def test_tokens_without_text_count():
    budget = ReasoningBudget(OPENED, 2)
    assert due_after(budget, ["", ""]) == [False, True]


def test_markers_of_other_lengths():
    syntax = ReasoningSyntax("[THINK]", "[/THINK]", opened=False)
    budget = ReasoningBudget(syntax, 4)  # the 4th reasoning token completes the end marker: no close
    assert due_after(budget, ["[", "THINK", "]", "a", "[/", "THINK", "]"]) == [False] * 7
    assert budget.done
    one_char = ReasoningBudget(ReasoningSyntax("{", "}", opened=True), 2)
    assert due_after(one_char, ["a", "}"]) == [False, False] and one_char.done


def test_bytes_of_a_character_split_across_tokens():
    syntax = ReasoningSyntax("<é>", "</é>", opened=False)
    budget = ReasoningBudget(syntax, 2)
    data = "<é>".encode()
    assert [budget.feed_bytes(data[:2]), budget.feed_bytes(data[2:])] == [False, False]  # opened
    end = "</é>".encode()
    assert [budget.feed_bytes(end[:3]), budget.feed_bytes(end[3:])] == [False, False]
    assert budget.done


@pytest.mark.parametrize("split", [1, 2, 3, 5, 8])
def test_the_result_does_not_depend_on_where_the_marker_is_split(split):
    text = "\n<think>\nreasoning goes here</think>\n\nanswer"
    pieces = [text[i : i + split] for i in range(0, len(text), split)]
    budget = ReasoningBudget(THINK, 1000)
    assert not any(due_after(budget, pieces))
    assert budget.done
