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
from ggufd.types import AnswerFilter, PassThrough, ToolCallDelta, ToolCallStream

#: finish reasons after which a generated text is not searched for tool calls
NO_CALLS_AFTER = ("length", "cancelled")


@dataclass(frozen=True)
class Piece:
    """What one batch of engine events adds to a streamed answer."""

    content: str = ""
    reasoning: str = ""
    #: this batch's token log probabilities; None when the request asked for none
    logprobs: list[TokenLogprob] | None = None
    #: tool-call pieces (a call's first one has its id and name), in order after ``content``
    tool_calls: tuple[ToolCallDelta, ...] = ()


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
    #: calls found only at the end in the raw text (gpt-oss: its answer filter drops them), not yet streamed
    late_calls: bool = False


@dataclass
class AnswerAssembler:
    """Feed it each batch of events (:meth:`add`); read the :class:`Outcome` once it ended.

    When the request offered tools, ``tool_calls`` is the family's :class:`ToolCallStream`
    (``ggufd.tool_calls``): content streams until the family's call syntax can have started, and
    calls come out as :class:`ToolCallDelta` pieces. ``parallel=False`` keeps the first call
    only. ``find_calls`` (the family's ``parse_tool_calls`` on the whole raw text) is the last
    resort at the end, for families whose answer filter hides the calls from the content (only for
    an answer without content: in a text answer, a call in the reasoning was only thought of).
    """

    answer_filter: AnswerFilter = field(default_factory=PassThrough)
    tool_calls: ToolCallStream | None = None
    find_calls: Callable[[str], list[dict] | None] | None = None
    parallel: bool = True
    logprobs: bool = False

    finished: Finished | None = None
    failed: Failed | None = None
    raw_text: str = ""  # the last batch's generated text, before the filter (for the log)
    _raw: list[str] = field(default_factory=list)
    _content: list[str] = field(default_factory=list)
    _reasoning: list[str] = field(default_factory=list)
    _logprobs: list[TokenLogprob] = field(default_factory=list)
    _calls: dict[int, dict] = field(default_factory=dict)  # index -> OpenAI-shaped call, arguments growing

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
        if self.find_calls is not None:
            self._raw.append(self.raw_text)
        content, reasoning = self.answer_filter.feed(self.raw_text) if texts else ("", "")
        ended = self.finished is not None
        if ended:
            tail_content, tail_reasoning = self.answer_filter.finish()
            content, reasoning = content + tail_content, reasoning + tail_reasoning
        if logprobs:
            self._logprobs.extend(logprobs)
        self._reasoning.append(reasoning)
        if self.tool_calls is None:
            self._content.append(content)
            return Piece(content, reasoning, logprobs)
        pieces = self.tool_calls.feed(content) if content else []
        if ended:
            pieces += self.tool_calls.finish()
        text, deltas = self._take(pieces)
        return Piece(text, reasoning, logprobs, deltas)

    def _take(self, pieces: list[str | ToolCallDelta]) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """Content and call pieces of one batch, after the first call only that call's pieces
        (``parallel=False``) and no content."""
        texts: list[str] = []
        deltas: list[ToolCallDelta] = []
        for piece in pieces:
            if isinstance(piece, str):
                if not self._calls:  # text after a call is not part of the answer
                    texts.append(piece)
                continue
            if not self.parallel and piece.index > 0:
                continue
            call = self._calls.get(piece.index)
            if call is None:
                call = self._calls[piece.index] = {
                    "id": piece.id,
                    "type": "function",
                    "function": {"name": piece.name, "arguments": ""},
                }
            call["function"]["arguments"] += piece.arguments
            deltas.append(piece)
        text = "".join(texts)
        self._content.append(text)
        return text, tuple(deltas)

    def outcome(self) -> Outcome:
        """The answer, once :attr:`finished` is set."""
        finished = self.finished
        assert finished is not None, "outcome() before the generation finished"
        calls = [self._calls[index] for index in sorted(self._calls)] or None
        late = False
        content = "".join(self._content)
        if (
            calls is None
            and self.find_calls is not None
            and finished.reason not in NO_CALLS_AFTER
            and not content.strip()  # the calls were taken out of the content, not merely mentioned
        ):
            calls = self.find_calls("".join(self._raw))
            if calls and not self.parallel:
                calls = calls[:1]
            late = bool(calls)
        cut_short = calls is not None and finished.reason in NO_CALLS_AFTER
        return Outcome(
            reason="tool_calls" if calls and not cut_short else finished.reason,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            content=content,
            reasoning="".join(self._reasoning),
            tool_calls=calls or None,
            logprobs=self._logprobs if self.logprobs else None,
            late_calls=late,
        )
