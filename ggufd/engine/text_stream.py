"""Turning generated token bytes into text that is safe to send.

Two rules for every piece of text leaving the engine:

* never invalid UTF-8: a multi-byte character split across tokens is held back until
  it is complete (bytes that can never become valid UTF-8 turn into U+FFFD);
* never a leaked stop string: text that could be the beginning of a stop string is
  held back until it is clear whether the stop string follows.

The same class serves streaming and non-streaming responses, so both see exactly the
same text. Text the engine writes in the model's place (a reasoning budget's close,
:meth:`TextAssembler.force`) is released at once and is never part of a stop string.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextAssembler:
    """Feed token bytes in, get releasable text out, and learn when a stop string matched."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._stops = tuple(s for s in dict.fromkeys(stop) if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add token bytes; return the text that can be released now.

        After a stop string matched, :attr:`stopped` is true, the text before the stop
        string has been returned and everything after it is dropped.
        """
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(data)
        return self._release(final=False)

    def force(self, data: bytes) -> str:
        """Add the bytes of a token the engine wrote in the model's place (the close of a spent
        reasoning budget); return them as text at once, with the text held back before them.

        Stop strings match the model's own text only, never across forced text: the text held
        back for a stop string that might follow is released, and matching starts afresh after
        the forced text. So no stop string cuts the forced text or what came before it."""
        if self.stopped:
            return ""
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        return text

    def finish(self) -> str:
        """The generation ended: flush what was held back (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self._pending
        if not self._stops:
            self._pending = ""
            return text
        # The stop string completed first wins (the earliest end; on a tie the longer one),
        # so the result does not depend on how the bytes were split into tokens.
        matches = [(i + len(s), i) for s in self._stops if (i := text.find(s)) >= 0]
        if matches:
            _, cut = min(matches)
            self.stopped = True
            self._pending = ""
            return text[:cut]
        hold = 0 if final else self._partial_stop_length(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:length]):
                    best = length
                    break
        return best
