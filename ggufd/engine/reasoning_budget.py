"""A request's reasoning budget (``GenerationRequest.max_reasoning_tokens``): counting the tokens a
model generates inside its reasoning and telling when the engine must close it.

:class:`ReasoningBudget` is fed the text of each generated token and says when the budget is spent
while the reasoning is still open; the engine then writes the syntax's ``closing_text`` in the
model's place (:mod:`ggufd.engine.batch`, :mod:`ggufd.engine.fake`) and the model answers.

When the reasoning is open: from the first token when the prompt opened it
(``ReasoningSyntax.opened``), else from the token that completes the start marker, with the rule
:class:`ggufd.reasoning.ReasoningFilter` uses to split the reasoning off: the answer opens its
reasoning only with the start marker at its very beginning (after whitespace). Text that begins
otherwise has no reasoning to limit, and a start marker later in it is content (the client sees it
as content too), so the budget never writes a close into an answer. The reasoning ends where the
text contains the end marker. The budget counts the tokens after the opening: the first
``budget`` of them are the model's, a close is due after them (budget 0: at once).

The search is incremental: each piece is looked at with a marker-length overlap from the pieces
before, never the whole text again. A request with a grammar gets no budget (the engine's decision,
not this class's): a forced token could break the grammar.
"""

from __future__ import annotations

import codecs

from ggufd.types import ReasoningSyntax

_BEFORE, _REASONING, _OVER = "before", "reasoning", "over"


class ReasoningBudget:
    """The reasoning of one generation against its budget: :meth:`feed` each generated token's text;
    when :attr:`due` (also returned by ``feed``) the engine must write the close now, before the next
    token. Once :attr:`done` there is nothing more to track (the reasoning closed, never opened, or
    its close was written: :meth:`closed`)."""

    def __init__(self, syntax: ReasoningSyntax, budget: int) -> None:
        self.syntax = syntax
        self.budget = max(0, budget)
        self.used = 0  # tokens generated inside the reasoning
        self._state = _REASONING if syntax.opened else _BEFORE
        self._tail = ""  # what a marker split across pieces may have begun with
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def due(self) -> bool:
        """The budget is spent and the reasoning still open: write the close before the next token."""
        return self._state == _REASONING and self.used >= self.budget

    @property
    def done(self) -> bool:
        return self._state == _OVER

    def closed(self) -> None:
        """The engine wrote the close: nothing more to track."""
        self._state, self._tail = _OVER, ""

    def feed(self, text: str) -> bool:
        """One generated token's text (``""`` for a token with none); returns :attr:`due`."""
        if self._state == _REASONING:
            self.used += 1
            self._look_for_end(self._tail + text)
        elif self._state == _BEFORE:
            rest = (self._tail + text).lstrip()
            start = self.syntax.start
            if not rest or (start.startswith(rest) and rest != start):
                self._tail = rest  # whitespace, or a start marker not yet complete
            elif rest.startswith(start):
                self._state = _REASONING  # this token opened it: the next ones count
                self._look_for_end(rest[len(start) :])
            else:
                self._state, self._tail = _OVER, ""  # the answer does not reason
        return self.due

    def feed_bytes(self, data: bytes) -> bool:
        """:meth:`feed` for a token's bytes (a character split across tokens is decoded whole)."""
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return self.feed(self._decoder.decode(data))

    def _look_for_end(self, window: str) -> None:
        end = self.syntax.end
        if end in window:
            self._state, self._tail = _OVER, ""
        else:
            keep = len(end) - 1
            self._tail = window[-keep:] if keep > 0 else ""
