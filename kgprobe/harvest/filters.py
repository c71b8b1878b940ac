"""Which surface strings count as entities, and the diversity cap on harvested tuples.

BertNet drops an entity that *contains* a stopword, which also throws away "United States of
America" and "Republic of the Congo". kgprobe only rejects stopwords at an entity's edges
("the Paris", "France and") or entities made of stopwords alone.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from kgprobe.errors import KgprobeError
from kgprobe.harvest.relation import Constraints

_STOPWORDS = {
    "english": """a about above after again against all also am an and any are as at be because been before
        being below between both but by can could did do does doing down during each either else even ever
        every few for from further had has have having he her here hers herself him himself his how however
        i if in into is it its itself just like may me might more most must my myself neither no nor not of
        off often on once only or other our ours ourselves out over own same shall she should so some such
        than that the their theirs them themselves then there these they this those through thus to too
        under until up upon us very was we were what when where which while who whom whose why will with
        within without would yet you your yours yourself yourselves""",
    "german": """aber alle als also am an auch auf aus bei bin bis bist da damit dann das dass dein dem den der
        des die dies doch dort du durch ein eine einem einen einer eines er es euer für hat hatte ich ihr im
        in ist ja jede kann kein man mein mit nach nicht noch nun nur ob oder ohne sehr sein sich sie sind so
        über um und uns unter vom von vor war was weil wenn wer wie wir wird zu zum zur""",
    "french": """au aux avec ce ces dans de des du elle en et eux il je la le les leur lui ma mais me même mes
        moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton tu un une
        vos votre vous c d j l à m n s t y été est sont""",
    "spanish": """a al algo como con de del desde donde el ella ellos en entre era es esa ese esta este fue ha
        hay la las le les lo los más me mi muy no nos o para pero por que se sin sobre su sus también te tu
        un una uno y ya""",
}


def stopwords(name: str) -> frozenset[str]:
    """A built-in list (english, german, french, spanish), ``none``, or a file with one word a line."""
    if name == "none":
        return frozenset()
    if name in _STOPWORDS:
        return frozenset(_STOPWORDS[name].split())
    path = Path(name)
    if not path.is_file():
        raise KgprobeError(f"unknown stopword list {name!r}: use {', '.join(_STOPWORDS)}, none, or a file path")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise KgprobeError(f"cannot read stopword list: {err.strerror or err}", path=path) from None
    except UnicodeDecodeError as err:  # worded as the KG readers word it
        raise KgprobeError(f"stopword list is not valid UTF-8 text ({err.reason})", path=path) from None
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip())


_WORD = re.compile(r"[^\W_]+(?:[-'.][^\W_]+)*", re.UNICODE)
# words that join the parts of a name ("United States of America", "Rio de Janeiro"): allowed
# inside an entity even when the prompt uses them
_NAME_JOINERS = frozenset("of the and de la le du del da do dos von van der y el al".split())


class EntityFilter:
    """Decides whether a candidate string may fill a slot (ANCHORS §1 step 4, with the fix above)."""

    def __init__(self, constraints: Constraints, prompts: list[str]):
        self.c = constraints
        self.stop = stopwords(constraints.stopwords)
        prompt_words = set()
        for p in prompts:
            prompt_words |= {w.lower() for w in _WORD.findall(re.sub(r"<ENT\d+>", " ", p))}
        self.prompt_words = prompt_words

    def ok(self, entity: str) -> bool:
        text = entity.strip()
        if len(text) < self.c.min_chars or text != entity.strip(" ") or "\n" in text:
            return False
        words = text.split()
        if len(words) > self.c.max_words or not any(ch.isalpha() for ch in text):
            return False
        # a short abbreviation may end in a dot ("St.", "D.C."); a possessive is not an entity
        if not all(_WORD.fullmatch(w[:-1] if w.endswith(".") and len(w) <= 4 else w) for w in words):
            return False
        if any(w.lower().endswith("'s") for w in words):
            return False
        lower = [w.lower() for w in words]
        if lower[0] in self.stop or lower[-1] in self.stop or len(set(lower)) < len(lower):
            return False
        if any(w in self.prompt_words and w not in _NAME_JOINERS for w in lower):
            return False
        if self.c.capitalization == "title" and not all(
                w[0].isupper() or w.lower() in self.stop or w.lower() in _NAME_JOINERS for w in words):
            return False
        if self.c.capitalization == "lower" and text != text.lower():
            return False
        return True

    def tuple_ok(self, entities: tuple[str, ...]) -> bool:
        """No entity equals, starts with or contains (as whole words) another slot's entity."""
        low = [f" {e.lower()} " for e in entities]
        return not any(i != j and b in a for i, a in enumerate(low) for j, b in enumerate(low))


def diversity_cap(
    tuples: list[tuple[str, ...]],
    *,
    max_per_word: int = 5,
    ignore: frozenset[str] = frozenset(),
    max_per_slot: dict[int, int] | None = None,
    taken: list[tuple[str, ...]] = (),
) -> list[int]:
    """Indices of ``tuples`` (sorted best first) kept when no word outside ``ignore`` appears in
    more than ``max_per_word`` kept tuples, and no value of slot ``j`` in more than
    ``max_per_slot[j]`` (1 for a functional relation: one capital per country). Tuples in
    ``taken`` (the seeds) use up their slot values first but are not returned."""
    words_seen: Counter[str] = Counter()
    slot_seen: Counter[tuple[int, str]] = Counter()
    limits = max_per_slot or {}
    slot_seen.update((j, ents[j].lower()) for ents in taken for j in limits)
    kept = []
    for i, ents in enumerate(tuples):
        words = {w.lower() for e in ents for w in e.split()} - ignore
        slots = [(j, ents[j].lower()) for j in limits]
        if all(words_seen[w] < max_per_word for w in words) and all(slot_seen[s] < limits[s[0]] for s in slots):
            kept.append(i)
            words_seen.update(words)
            slot_seen.update(slots)
    return kept
