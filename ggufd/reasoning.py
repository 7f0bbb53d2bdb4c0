"""Splitting ``<think>``-style reasoning off a generated answer (part of the plugin API).

Families whose models reason between two markers (Qwen3, DeepSeek R1, GLM, Kimi, ...) return
``ReasoningFilter(prompt.reasoning)`` from their ``answer_filter`` hook. The answer may open
with the start marker, or start inside the reasoning when the prompt opened it
(``ReasoningSyntax.opened``). Whitespace around the reasoning is trimmed, as llama.cpp's and
vLLM's reasoning parsers do: the reasoning has none at its ends, the content none at its start.
The result depends only on the text, never on how it was split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ggufd.types import ReasoningSyntax

#: OpenAI's ``reasoning_effort`` levels, by whether a hybrid model thinks at them
EFFORTS_WITHOUT_THINKING = frozenset({"none", "minimal"})
EFFORTS_WITH_THINKING = frozenset({"low", "medium", "high", "xhigh"})


def thinking_switch(template_kwargs: Mapping[str, Any], switch: str = "enable_thinking") -> tuple[bool, frozenset[str]]:
    """Whether a hybrid model (one with a template switch such as Qwen3's ``enable_thinking``) thinks
    for these template kwargs, and the keys that decided it (for ``ChatPrompt.honoured``).

    Only the switch set to ``False`` turns thinking off (templates test ``enable_thinking is false``);
    a ``reasoning_effort`` wins over the switch: ``none``/``minimal`` off, ``low`` … ``xhigh`` on."""
    honoured = frozenset({switch} & set(template_kwargs))
    on = template_kwargs.get(switch) is not False
    effort = template_kwargs.get("reasoning_effort")
    if isinstance(effort, str) and effort.lower() in EFFORTS_WITHOUT_THINKING | EFFORTS_WITH_THINKING:
        on = effort.lower() in EFFORTS_WITH_THINKING
        honoured |= {"reasoning_effort"}
    return on, honoured


def partial_suffix(text: str, markers: tuple[str, ...]) -> int:
    """Where the longest suffix of ``text`` that could still grow into one of ``markers``
    starts (``len(text)`` when there is none)."""
    longest = max((len(m) for m in markers), default=0)
    for start in range(max(0, len(text) - longest + 1), len(text)):
        tail = text[start:]
        if any(m.startswith(tail) for m in markers):
            return start
    return len(text)


class ReasoningFilter:
    """(content, reasoning) per piece of generated text; see the ``answer_filter`` hook.

    States: ``before`` (the answer may still open its reasoning: leading whitespace and a partial
    start marker are held), ``reasoning`` (up to the end marker; a partial end marker and
    trailing whitespace are held), ``after`` (whitespace after the end marker is dropped) and
    ``answer`` (content, verbatim).
    """

    def __init__(self, syntax: ReasoningSyntax) -> None:
        self.syntax = syntax
        self._state = "reasoning" if syntax.opened else "before"
        self._pending = ""
        self._reasoned = False  # some reasoning text was given (leading whitespace is dropped until then)

    def feed(self, text: str) -> tuple[str, str]:
        self._pending += text
        content: list[str] = []
        reasoning: list[str] = []
        self._run(content, reasoning)
        return "".join(content), "".join(reasoning)

    def finish(self) -> tuple[str, str]:
        pending, self._pending = self._pending, ""
        if self._state == "before":
            return pending, ""  # whitespace or a partial start marker: content
        if self._state == "reasoning":
            cut = partial_suffix(pending, (self.syntax.end,))
            return "", pending[:cut].rstrip() if self._reasoned else pending[:cut].strip()
        return "", ""

    def _run(self, content: list[str], reasoning: list[str]) -> None:
        start, end = self.syntax.start, self.syntax.end
        while self._pending:
            if self._state == "answer":
                content.append(self._pending)
                self._pending = ""
            elif self._state == "before":
                rest = self._pending.lstrip()
                if not rest or (start.startswith(rest) and rest != start):
                    return  # cannot tell yet
                if rest.startswith(start):
                    self._state, self._pending = "reasoning", rest[len(start) :]
                else:
                    self._state = "answer"
            elif self._state == "reasoning":
                if not self._reasoned:
                    self._pending = self._pending.lstrip()
                at = self._pending.find(end)
                if at >= 0:
                    text = self._pending[:at].rstrip()
                    if text:
                        reasoning.append(text)
                    self._state, self._pending = "after", self._pending[at + len(end) :]
                    continue
                keep = partial_suffix(self._pending, (end,))
                text = self._pending[:keep]
                held = len(text) - len(text.rstrip())  # trailing whitespace waits: the end marker may follow
                text = text[: len(text) - held]
                if text:
                    reasoning.append(text)
                    self._reasoned = True
                self._pending = self._pending[len(text) :]
                return
            else:  # after
                rest = self._pending.lstrip()
                if not rest:
                    self._pending = ""
                    return
                self._state, self._pending = "answer", rest
