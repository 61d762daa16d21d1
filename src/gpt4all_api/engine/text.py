"""Turning sampled tokens into text: incremental UTF-8 and stop strings across token edges."""

from __future__ import annotations

import codecs


class StopMatcher:
    """Feeds text through, holding back any tail that could still become a stop string.

    `feed` returns the text that is safe to emit and whether a stop string was completed; the
    stop string itself (and anything after it) is never emitted.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]):
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buf = self._held + text
        cut = -1
        for s in self.stops:
            i = buf.find(s)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
                self.matched = s
        if cut != -1:
            self._held = ""
            return buf[:cut], True
        keep = 0
        for s in self.stops:
            # longest suffix of buf that is a proper prefix of s
            for n in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:n]):
                    keep = n
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class TokenTextDecoder:
    """Bytes of successive tokens to text, never splitting a multi-byte character."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
