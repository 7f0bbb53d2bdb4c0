"""From engine events to an answer, the same for every wire format.

The engine produces raw text (:class:`~ggufd.engine.events.TextDelta`), token log
probabilities and an end. What a client sees is an *answer*: content, reasoning (split off by
the family's answer filter), tool calls (found by the family's parser or the generic one, when
the request offered tools) and a finish reason. :class:`AnswerAssembler` does that once, so each
format's module only decides how the pieces look on its wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ggufd.engine.events import Failed, Finished, TextDelta, TokenLogprob
from ggufd.types import AnswerFilter, PassThrough

#: finish reasons after which a generated text is not searched for tool calls
NO_CALLS_AFTER = ("length", "cancelled")


@dataclass(frozen=True)
class Piece:
    """What one batch of engine events adds to a streamed answer."""

    content: str = ""
    reasoning: str = ""
    #: this batch's token log probabilities; None when the request asked for none
    logprobs: list[TokenLogprob] | None = None


@dataclass(frozen=True)
class Outcome:
    """A finished answer: how it ended, what it said, what it cost."""

    reason: str  # "stop" | "length" | "tool_calls" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    content: str = ""  # the whole content (for streams: also what was streamed)
    reasoning: str = ""  # the whole reasoning
    tool_calls: list[dict] | None = None  # OpenAI-shaped calls; None when there are none
    logprobs: list[TokenLogprob] | None = None  # every token's, when asked for
    #: streams with tools offered: content held back until the end and found not to be a call
    held_content: str = ""


@dataclass
class AnswerAssembler:
    """Feed it each batch of events (:meth:`add`); read the :class:`Outcome` once it ended.

    ``find_calls`` is set when the request offered tools: then content is held back until the
    end (the whole answer may turn out to be a call) and searched for calls there.
    """

    answer_filter: AnswerFilter = field(default_factory=PassThrough)
    find_calls: Callable[[str], list[dict] | None] | None = None
    logprobs: bool = False

    finished: Finished | None = None
    failed: Failed | None = None
    raw_text: str = ""  # the last batch's generated text, before the filter (for the log)
    _content: list[str] = field(default_factory=list)
    _reasoning: list[str] = field(default_factory=list)
    _logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def holds_content(self) -> bool:
        return self.find_calls is not None

    def add(self, events: list) -> Piece:
        """One batch of events -> what it adds to the answer. Sets :attr:`finished` or
        :attr:`failed` when the batch holds the end (events after a ``Failed`` are ignored)."""
        texts: list[str] = []
        logprobs: list[TokenLogprob] | None = [] if self.logprobs else None
        for event in events:
            if isinstance(event, TextDelta):
                texts.append(event.text)
            elif isinstance(event, TokenLogprob):
                if logprobs is not None:
                    logprobs.append(event)
            elif isinstance(event, Finished):
                self.finished = event
            elif isinstance(event, Failed):
                self.failed = event
                break
        self.raw_text = "".join(texts)
        content, reasoning = self.answer_filter.feed(self.raw_text) if texts else ("", "")
        if self.finished is not None:
            tail_content, tail_reasoning = self.answer_filter.finish()
            content, reasoning = content + tail_content, reasoning + tail_reasoning
        self._content.append(content)
        self._reasoning.append(reasoning)
        if logprobs:
            self._logprobs.extend(logprobs)
        if self.holds_content:
            return Piece("", reasoning, None)
        return Piece(content, reasoning, logprobs)

    def outcome(self) -> Outcome:
        """The answer, once :attr:`finished` is set."""
        finished = self.finished
        assert finished is not None, "outcome() before the generation finished"
        content = "".join(self._content)
        calls = None
        if self.find_calls is not None and finished.reason not in NO_CALLS_AFTER:
            calls = self.find_calls(content)
        return Outcome(
            reason="tool_calls" if calls else finished.reason,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            content=content,
            reasoning="".join(self._reasoning),
            tool_calls=calls or None,
            logprobs=self._logprobs if self.logprobs else None,
            held_content=content if self.holds_content and not calls else "",
        )
