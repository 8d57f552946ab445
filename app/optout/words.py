"""What the opt-out lexicons know about one word, and the misspellings that read as a keyword (pure)."""

from __future__ import annotations

from app.optout.lexicon import Lexicon


class WordFacts:
    """What the lexicon knows about one processed word (cached per word)."""

    __slots__ = ("strength", "language", "companion", "negator", "msg", "typo_of", "patterns", "net", "cond", "obj", "fill", "chan", "send", "me")

    def __init__(self, lexicon: Lexicon, typos: dict[str, str], anchors: dict[str, list[int]],
                 prefixes: dict[str, list[int]], prefix_lengths: tuple[int, ...], word: str) -> None:
        kw = lexicon.keywords.get(word)
        if kw is None:
            for length in range(len(word), 3, -1):
                kw = lexicon.keyword_prefixes.get(word[:length])
                if kw is not None:
                    break
        self.strength, self.language = kw if kw else (None, None)
        sets = lexicon.sets
        self.negator = word in sets["neg"]
        self.msg = word in sets["msg"]
        self.companion = kw is not None or any(word in sets[n] for n in ("fill", "msg", "me", "det"))
        self.typo_of = None if kw or self.companion else typos.get(word)
        self.fill = word in sets["fill"]
        self.cond = word in sets["cond"]
        self.obj = word in sets["obj"] or any(
            word.endswith(suffix) and len(word) > len(suffix) + 2 for suffix in lexicon.obj_suffixes
        )
        self.chan = word in sets["chan"]
        self.send = word in sets["send"]
        self.me = word in sets["me"]
        net = lexicon.net.get(word)
        if net is None:
            for length in range(len(word), 2, -1):
                net = lexicon.net_prefixes.get(word[:length])
                if net is not None:
                    break
        self.net = net or (self.language if self.strength in ("strong", "loose") else None)
        ids = list(anchors.get(word, ()))
        for length in prefix_lengths:
            if length <= len(word):
                ids.extend(prefixes.get(word[:length], ()))
        self.patterns = tuple(sorted(set(ids)))


def typo_variants(word: str) -> set[str]:
    """Misspellings one slip away: swapped neighbours, a doubled letter; longer words also lose, gain or change one."""
    out: set[str] = set()
    n = len(word)
    for i in range(n - 1):
        out.add(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
    for i in range(n):
        out.add(word[:i] + word[i] + word[i:])
    if n >= 6:
        out.update(word[:i] + word[i + 1 :] for i in range(n))
    if n >= 8:
        letters = "abcdefghijklmnopqrstuvwxyz"
        out.update(word[:i] + c + word[i + 1 :] for i in range(n) for c in letters)
        out.update(word[:i] + c + word[i:] for i in range(n + 1) for c in letters)
    out.discard(word)
    return out


def edits_within(a: str, b: str, limit: int, counter: list[int]) -> bool:
    """Whether a and b are at most `limit` edits apart (insert, delete, change, swap neighbours).

    Banded optimal-string-alignment distance; `counter[0]` grows by the cells computed."""
    if abs(len(a) - len(b)) > limit:
        return False
    big = limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [big] * len(b)
        lo, hi = max(1, i - limit), min(len(b), i + limit)
        for j in range(lo, hi + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                value = min(value, previous2[j - 2] + 1)
            current[j] = value
        counter[0] += hi - lo + 1
        if min(current[lo : hi + 1], default=big) > limit:
            return False
        previous2, previous = previous, current
    return previous[len(b)] <= limit
