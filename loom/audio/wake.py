"""WakeWord: the wake phrase found in what the STT heard, and the user's query after it.

No registry package ships an acoustic model for "loom", so the wake word is matched on the
``transcript.final`` text, tolerantly (tiny.en hears "Loon", "Bloom", "Lume" for "Loom"):

* the text is normalised (lower case, letters and digits, single spaces);
* a word matches a phrase word when it is equal, is one of ``aliases`` (spellings the STT writes
  for the name, the last word of the first phrase), or is within Levenshtein ``max_distance``
  **and** Jaro-Winkler ``jaro_winkler`` of it. Upstream accepts either measure; with a 4-letter
  name that wakes on "look", "room" and "loop" (one edit away), which both together refuse;
* phrases are tried in order (default "hey loom", then "loom") at the start of the utterance, and
  with ``match_anywhere`` at any later word (a single-word phrase takes the closest word). A fuzzy
  word counts only within the first ``fuzzy_within`` words, where a wake phrase is said ("okay,
  bloom, ..."): later in a sentence only the name or an alias does ("the roses bloom" is no wake).

On a match: ``wake_word_detected`` (``phrase``, ``text``, a new ``session_id``). If the words after
the phrase hold at least ``min_query_chars`` letters the query is published at once
(``user.query`` with them: *immediate* mode); otherwise the detector is *armed* and the next
utterance, whole, becomes the ``user.query`` of that session. The arming lapses after
``arm_timeout_s``, so a stray wake does not capture an unrelated utterance much later. An armed
utterance that holds a wake phrase itself starts a new session instead.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loom.audio.stage import Spawn, Stage
from loom.audio.topics import TRANSCRIPT_FINAL, USER_QUERY, WAKE_DETECTED, AudioTopics
from loom.errors import UsageError
from loom.events.event import Event

if TYPE_CHECKING:
    from collections.abc import Iterable

    from loom.events.bus import EventBus

__all__ = ["WakeMatch", "WakeWord", "jaro_winkler", "levenshtein", "normalize"]

log = logging.getLogger("loom.audio")
_NOT_WORD = re.compile(r"[^0-9a-z]+")
_EDGE = " \t,.;:!?-–—\"'()"  # stripped from the ends of a query


def normalize(text: str) -> str:
    """Lower case, letters and digits only, single spaces."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


def levenshtein(a: str, b: str) -> int:
    """Edits (insert, delete, substitute) that turn ``a`` into ``b``."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def jaro_winkler(a: str, b: str, prefix_scale: float = 0.1) -> float:
    """Jaro-Winkler similarity, 0..1 (1: equal); a common prefix (up to 4) counts extra."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    window = max(0, max(len(a), len(b)) // 2 - 1)
    used = [False] * len(b)
    matched_a = []
    for i, ca in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not used[j] and b[j] == ca:
                used[j] = True
                matched_a.append(ca)
                break
    m = len(matched_a)
    if not m:
        return 0.0
    matched_b = [cb for cb, u in zip(b, used, strict=True) if u]
    transpositions = sum(x != y for x, y in zip(matched_a, matched_b, strict=True)) / 2
    jaro = (m / len(a) + m / len(b) + (m - transpositions) / m) / 3
    prefix = 0
    for ca, cb in zip(a[:4], b[:4], strict=False):
        if ca != cb:
            break
        prefix += 1
    return jaro + prefix * prefix_scale * (1 - jaro)


@dataclass(frozen=True, slots=True)
class WakeMatch:
    """A wake phrase found: which one, at which word, and the words after it (original text)."""

    phrase: str
    start: int
    query: str


class WakeWord(Stage):
    """Transcript-based wake word: ``transcript.final`` → ``wake_word_detected`` and ``user.query``.

    Args:
        bus, spawn, topics: as every :class:`~loom.audio.stage.Stage`.
        phrases: wake phrases, tried in order (put the longer ones first).
        max_distance: Levenshtein distance a word may be off by (and pass ``jaro_winkler``).
        jaro_winkler: similarity a fuzzy word needs (0..1).
        match_anywhere: look past the first word too ("okay, loom, ...").
        fuzzy_within: fuzzy words count only among the first this many words.
        min_query_chars: letters after the phrase needed for the immediate mode.
        aliases: what the STT writes for the name instead (each matches it exactly).
        arm_timeout_s: how long an armed detector waits for the query.
    """

    name = "wake"

    def __init__(
        self,
        bus: EventBus,
        *,
        spawn: Spawn,
        topics: AudioTopics | None = None,
        phrases: Iterable[str] = ("hey loom", "loom"),
        max_distance: int = 1,
        jaro_winkler: float = 0.90,
        match_anywhere: bool = True,
        fuzzy_within: int = 2,
        min_query_chars: int = 4,
        aliases: Iterable[str] = ("loon", "lume", "loam"),
        arm_timeout_s: float = 8.0,
    ) -> None:
        super().__init__(bus, spawn=spawn, topics=topics)
        if isinstance(phrases, str):
            phrases = [phrases]
        self.phrases = [normalize(p) for p in phrases]
        if not self.phrases or not all(self.phrases):
            raise UsageError(f"phrases must be non-empty words, got {phrases!r}")
        if max_distance.__class__ is not int or max_distance < 0:
            raise UsageError(f"max_distance must be a non-negative int, got {max_distance!r}")
        if not 0.0 < jaro_winkler <= 1.0:
            raise UsageError(f"jaro_winkler must be within (0, 1], got {jaro_winkler!r}")
        if not arm_timeout_s > 0:
            raise UsageError(f"arm_timeout_s must be positive, got {arm_timeout_s!r}")
        self.max_distance, self.jaro_winkler = max_distance, float(jaro_winkler)
        self.match_anywhere, self.min_query_chars = bool(match_anywhere), int(min_query_chars)
        self.fuzzy_within = int(fuzzy_within)
        self.wake_name = self.phrases[0].split()[-1]
        self.aliases = {normalize(a) for a in ([aliases] if isinstance(aliases, str) else aliases)} - {""}
        self.arm_timeout_s = float(arm_timeout_s)
        self.session_id = ""  # the armed session ("" when not armed)
        self._armed_at = 0.0

    async def _start(self) -> None:
        self.listen(self.topics.transcript, [TRANSCRIPT_FINAL], self.handle)

    async def _stop(self) -> None:
        self.session_id = ""

    @property
    def armed(self) -> bool:
        """Waiting for the query of a wake that came without one (and not lapsed)."""
        if self.session_id and time.monotonic() - self._armed_at > self.arm_timeout_s:
            self.session_id = ""
            self.count("arm_expired")
        return bool(self.session_id)

    # -- matching --------------------------------------------------------------------------------
    def _word_matches(self, word: str, target: str, position: int) -> tuple[bool, int, float]:
        if word == target or (target == self.wake_name and word in self.aliases):
            return True, 0, 1.0
        if position >= self.fuzzy_within:
            return False, len(target), 0.0
        d = levenshtein(word, target)
        if d > self.max_distance:
            return False, d, 0.0
        jw = jaro_winkler(word, target)
        return jw >= self.jaro_winkler, d, jw

    def match(self, text: str) -> WakeMatch | None:
        """The first phrase found in ``text`` (normalised word by word), or ``None``."""
        words = text.split()
        # one token per word ("Loom," → "loom", "o'clock" → "oclock"); a word of punctuation has none
        tokens = [(t, i) for i, w in enumerate(words) if (t := _NOT_WORD.sub("", w.lower()))]
        for phrase in self.phrases:
            target = phrase.split()
            n = len(target)
            starts = range(len(tokens) - n + 1) if self.match_anywhere else range(min(1, len(tokens) - n + 1))
            best: tuple[int, float, int] | None = None  # (distance, -similarity, start): lowest wins
            for s in starts:
                scores = [self._word_matches(tokens[s + k][0], target[k], s + k) for k in range(n)]
                if all(ok for ok, _, _ in scores):
                    key = (sum(d for _, d, _ in scores), -sum(jw for _, _, jw in scores), s)
                    if best is None or key < best:
                        best = key
                    if n > 1 or key[0] == 0:  # a longer phrase: the first place; a word: an exact one
                        break
            if best is not None:
                s = best[2]
                last_word = tokens[s + n - 1][1]
                query = " ".join(words[last_word + 1 :]).strip(_EDGE)
                return WakeMatch(phrase=phrase, start=tokens[s][1], query=query)
        return None

    # -- events ----------------------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        """One ``transcript.final``: wake, query, or nothing."""
        self.count("transcripts")
        text = (event.metadata.get("text") or event.text()).strip()
        if not text:
            return
        armed = self.armed
        found = self.match(text)
        if found is not None:
            if armed:
                self.count("rearmed")
            session = f"sess_{time.time_ns():x}"
            self.count("wakes")
            md = {"phrase": found.phrase, "text": text, "session_id": session}
            self.bus.publish_nowait(self.topics.wake, Event(WAKE_DETECTED, source="wake", priority=65, metadata=md))
            if len(found.query.replace(" ", "")) >= self.min_query_chars:
                self.session_id = ""
                self._query(found.query, session)
            else:
                self.session_id, self._armed_at = session, time.monotonic()
        elif armed:
            session, self.session_id = self.session_id, ""
            self._query(text, session)
        else:
            self.count("ignored")

    def _query(self, text: str, session: str) -> None:
        self.count("queries")
        md = {"text": text, "session_id": session}
        self.bus.publish_nowait(
            self.topics.query, Event.from_text(USER_QUERY, text, source="wake", priority=60, metadata=md)
        )
