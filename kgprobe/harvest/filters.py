"""Which surface strings count as entities, and the diversity cap on harvested tuples.

A slot whose seeds are all numbers or all codes (ISO codes, chemical symbols) takes values of that
form only (:func:`slot_forms`); every other slot takes names.

BertNet drops an entity that *contains* a stopword, which also throws away "United States of
America" and "Republic of the Congo". kgprobe only rejects stopwords at an entity's edges
("the Paris", "France and") or entities made of stopwords alone.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from kgprobe.harvest.relation import Constraints
from kgprobe.harvest.stopwords import stopwords

_WORD = re.compile(r"[^\W_]+(?:[-'.][^\W_]+)*", re.UNICODE)
# words that join the parts of a name ("United States of America", "Rio de Janeiro"): allowed
# inside an entity even when the prompt uses them
_NAME_JOINERS = frozenset("of the and de la le du del da do dos von van der y el al".split())
#: a number as a slot value: a year, a count ("1756", "8,848", "3.14")
NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)*")
#: a code as a slot value: a capital, then letters and digits, no space ("FR", "JPY", "H2O", "Au")
CODE = re.compile(r"[A-Z][A-Za-z0-9]*")
#: longest seed value that still reads as a code rather than a name in capitals
MAX_CODE_CHARS = 6


def is_code(text: str) -> bool:
    """A :data:`CODE` of at most :data:`MAX_CODE_CHARS` characters that is no capitalised word:
    two characters at most (chemical symbols "Au", "C") or a capital or digit after the first
    ("FR", "JPY", "H2O"; not "Paris", "Oslo")."""
    return (CODE.fullmatch(text) is not None and len(text) <= MAX_CODE_CHARS
            and (len(text) <= 2 or any(ch.isupper() or ch.isdigit() for ch in text[1:])))


class EntityFilter:
    """Decides whether a candidate string may fill a slot (ANCHORS §1 step 4, with the fix above)."""

    def __init__(self, constraints: Constraints, prompts: list[str]):
        self.c = constraints
        self.stop = stopwords(constraints.stopwords)
        prompt_words = set()
        for p in prompts:
            prompt_words |= {w.lower() for w in _WORD.findall(re.sub(r"<ENT\d+>", " ", p))}
        self.prompt_words = prompt_words

    def ok(self, entity: str, *, form: SlotForm | None = None) -> bool:
        """Whether ``entity`` may fill a slot; a slot with a ``form`` (:func:`slot_forms`) takes
        values of that form only, and no other slot takes a number (a name has a letter)."""
        text = entity.strip()
        if form is not None:
            return text == entity.strip(" ") and form.matches(text)
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


@dataclass(frozen=True)
class SlotForm:
    """What every seed value of a slot looks like when it is no name: a ``number`` (birth years,
    calling codes), or a ``code`` (:func:`is_code`) as long as the seeds' (ISO codes "FR", "JP":
    not "AUS"; chemical symbols "Au", "C": not "Aluminium"). WordNet types neither (or, worse,
    types "Au" as a chemical element, as "gold" is), and the name filter refuses every number."""

    kind: str                  # "number" | "code"
    lengths: tuple[int, int]   # the seed values' shortest and longest (a code keeps to them)

    def matches(self, text: str) -> bool:
        if self.kind == "number":
            return NUMBER.fullmatch(text) is not None
        return is_code(text) and self.lengths[0] <= len(text) <= self.lengths[1]


def slot_forms(seeds: list[tuple[str, ...]]) -> dict[int, SlotForm]:
    """Slot -> its form, for the slots whose every seed value is a number (:data:`NUMBER`) or a
    code (:func:`is_code`)."""
    forms = {}
    for j in range(len(seeds[0]) if seeds else 0):
        values = [s[j].strip() for s in seeds]
        lengths = (min(map(len, values)), max(map(len, values)))
        if all(NUMBER.fullmatch(v) for v in values):
            forms[j] = SlotForm("number", lengths)
        elif all(is_code(v) for v in values):
            forms[j] = SlotForm("code", lengths)
    return forms


def diversity_cap(
    tuples: list[tuple[str, ...]],
    *,
    max_per_word: int = 5,
    ignore: frozenset[str] = frozenset(),
    max_per_slot: dict[int, int] | None = None,
    taken: list[tuple[str, ...]] = (),
    word_slots: list[int] | None = None,
) -> list[int]:
    """Indices of ``tuples`` (sorted best first) kept when no word outside ``ignore`` of the slots
    ``word_slots`` (default: all) appears in more than ``max_per_word`` kept tuples, and no value
    of slot ``j`` in more than ``max_per_slot[j]`` (1 for a functional relation: one capital per
    country). Tuples in ``taken`` (the seeds) use up their slot values first but are not returned.

    A functional relation passes ``word_slots=[0]``: its subjects are capped already, and its
    objects may repeat (many countries lie in Asia; BertNet's 5-per-word cap would stop at five)."""
    words_seen: Counter[str] = Counter()
    slot_seen: Counter[tuple[int, str]] = Counter()
    limits = max_per_slot or {}
    slot_seen.update((j, ents[j].lower()) for ents in taken for j in limits)
    kept = []
    for i, ents in enumerate(tuples):
        words = {w.lower() for j, e in enumerate(ents) if word_slots is None or j in word_slots
                 for w in e.split()} - ignore
        slots = [(j, ents[j].lower()) for j in limits]
        if all(words_seen[w] < max_per_word for w in words) and all(slot_seen[s] < limits[s[0]] for s in slots):
            kept.append(i)
            words_seen.update(words)
            slot_seen.update(slots)
    return kept
