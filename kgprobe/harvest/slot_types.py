"""Slot types inferred from the seeds with WordNet, for relations whose file names none.

A user who writes five seeds ``Paris|France, Tokyo|Japan, ...`` means "national capitals" and
"countries", but the search also proposes Sydney, Victoria or East Africa. When the seeds' values
of a slot are WordNet lemmas, their common ancestor names the type:

    senses(v)    = the noun synsets whose lemmas include v
    up(v)        = every synset on a hypernym / instance-hypernym path above a sense of v, the
                   senses themselves included
    support(s)   = sum_i 1 / rank_i(s)    (rank_i(s): the frequency rank, 1 = most common, of the
                                           first sense of seed value v_i under s; 0 if none is)
    type(slot)   = argmax { depth(s) : support(s) >= QUORUM * n }     (n seed values)

where depth is the longest hypernym path from the root, so the deepest synset that (nearly) all
seeds share *in their common senses* wins. The quorum forgives one odd seed in five ("Oceania"
is no continent in WordNet); the rank keeps rare senses from deciding (French, Japanese,
Portuguese are languages first and peoples second; "tool" is no organism in its first sense)
("national capital" for Paris, Tokyo, Nairobi, Lima, Ottawa; "country" for France, Japan, ...).
A candidate value then passes when one of its senses lies under that synset and none is the
synset itself (the type's own name is the class, not a member: *violin -> musician*). When the shared
synset is too general to say anything (depth < ``MIN_DEPTH``: "entity", "abstraction", "object")
or the seeds are not all nouns, the slot is typed by part of speech instead: the part of speech
(nearly) all seeds are used as most (WordNet's tagged-sense counts: "quick" is an adjective
first, though also a noun), else the one (nearly) all seeds have a sense of (river, lake, desert,
ocean are nouns, though "desert" is used as a verb most), and a candidate passes when it has a
sense of it (antonyms of adjectives stay adjectives). Seeds unknown to WordNet are tolerated up
to ``MIN_KNOWN``; past that, or when the known seeds share neither a synset nor a part of speech,
the slot stays untyped and the run says why. Candidates unknown to WordNet fail a typed slot: a
type is a claim about WordNet's words.

WordNet's index files give lemma -> synsets per part of speech; the hypernym edges come from the
data files as :func:`kgprobe.kg.datasets.wordnet.read_synsets` reads them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from kgprobe.kg.datasets import wordnet

#: a shared synset this close to the root ("entity" 0, "physical entity" 1, "object" 2,
#: "whole" 3) does not constrain anything: fall back to part of speech
MIN_DEPTH = 4
#: at least this share of the seeds (and two) must be WordNet lemmas to type a slot
MIN_KNOWN = 0.6
#: share of the known seeds that must lie under the type synset
QUORUM = 0.8
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "r": "adverb"}


@dataclass(frozen=True)
class InferredType:
    """What a slot's values must be: under ``synset`` (a noun type), or of the parts of speech
    ``pos`` (when no useful synset is shared); ``name`` is what types.json and the log show."""

    slot: int
    method: str  # "wordnet-synset" | "wordnet-pos"
    name: str
    synset: str | None
    pos: tuple[str, ...]
    seeds_known: int
    seeds: int

    def as_dict(self) -> dict:
        return asdict(self)


class WordNetIndex:
    """Lemma -> senses per part of speech, and the noun hypernym graph (read once, ~2 s)."""

    def __init__(self, root: Path):
        self.senses: dict[str, dict[str, list[str]]] = {}
        self.tagged: dict[tuple[str, str], int] = {}
        for entry in wordnet.read_index(root):
            self.senses.setdefault(entry.lemma, {}).setdefault(entry.pos, []).extend(entry.offsets)
            # senses tagged in WordNet's semantic concordance: how often the word is this POS
            self.tagged[(entry.lemma, entry.pos)] = entry.tagged
        # noun synsets and their hypernym / instance-hypernym edges (both only ever point to nouns)
        nouns = [syn for syn in wordnet.read_synsets(root) if syn.pos == "n"]
        self.parents: dict[str, list[str]] = {
            syn.offset: [p[1] for p in syn.pointers if p[0] in ("@", "@i")] for syn in nouns}
        self.labels = {syn.offset: syn.lemmas[0] for syn in nouns}
        self._up_memo: dict[str, frozenset[str]] = {}
        self._depth_memo: dict[str, int] = {}

    @staticmethod
    def key(value: str) -> str:
        return "_".join(value.strip().lower().split())

    def pos_of(self, value: str) -> set[str]:
        return set(self.senses.get(self.key(value), {}))

    def main_pos(self, value: str) -> str | None:
        """The part of speech ``value`` is used as most (tagged senses, then senses)."""
        key = self.key(value)
        senses = self.senses.get(key, {})
        return max(senses, key=lambda p: (self.tagged.get((key, p), 0), len(senses[p]), p)) if senses else None

    def up(self, value: str) -> set[str]:
        """Every noun synset at or above a noun sense of ``value``."""
        out: set[str] = set()
        for offset in self.senses.get(self.key(value), {}).get("n", []):
            out |= self._up(offset)
        return out

    def up_ranked(self, value: str) -> dict[str, int]:
        """Every noun synset at or above a noun sense of ``value`` -> the rank of the most common
        such sense (WordNet's index lists senses most frequent first)."""
        out: dict[str, int] = {}
        for rank, offset in enumerate(self.senses.get(self.key(value), {}).get("n", []), 1):
            for synset in self._up(offset):
                out.setdefault(synset, rank)
        return out

    def _up(self, offset: str) -> frozenset[str]:
        if offset not in self._up_memo:
            out = {offset}
            for parent in self.parents.get(offset, []):
                out |= self._up(parent)
            self._up_memo[offset] = frozenset(out)
        return self._up_memo[offset]

    def depth(self, offset: str) -> int:
        if offset not in self._depth_memo:
            parents = self.parents.get(offset, [])
            self._depth_memo[offset] = 1 + max(self.depth(p) for p in parents) if parents else 0
        return self._depth_memo[offset]

    def name(self, offset: str) -> str:
        return self.labels.get(offset, offset)


@lru_cache(maxsize=2)
def load_index(root: str | None = None) -> WordNetIndex | None:
    """The index of the WordNet install (:func:`kgprobe.kg.datasets.wordnet.resolve_dir`), or
    None when WordNet or its index files are missing (typing is then skipped, not an error)."""
    path = wordnet.resolve_dir(root)
    if wordnet.available(path) or not all((path / f"index.{f}").is_file() for _, f in wordnet.POS_FILES):
        return None
    return WordNetIndex(path)


def infer_slot_type(index: WordNetIndex, slot: int, values: list[str]) -> InferredType | str:
    """The type the seeds' ``values`` of ``slot`` share, or why there is none (one line)."""
    known = [v for v in dict.fromkeys(values) if index.pos_of(v)]
    need = max(2, math.ceil(MIN_KNOWN * len(set(values))))
    if len(known) < need:
        missing = sorted(set(values) - set(known))
        return (f"slot {slot}: only {len(known)} of {len(set(values))} seed values are WordNet words "
                f"(not: {', '.join(missing)}); left untyped")
    support: dict[str, float] = {}
    for v in known:
        for s, rank in index.up_ranked(v).items():
            support[s] = support.get(s, 0.0) + 1 / rank
    shared = [s for s, x in support.items() if x >= QUORUM * len(known) - 1e-9]
    if shared:
        best = max(shared, key=lambda s: (index.depth(s), s))
        if index.depth(best) >= MIN_DEPTH:
            return InferredType(slot=slot, method="wordnet-synset", name=index.name(best), synset=best,
                                pos=("n",), seeds_known=len(known), seeds=len(set(values)))
    main = [index.main_pos(v) for v in known]
    pos = {p for p in set(main) if main.count(p) >= QUORUM * len(known)}
    if not pos:
        pos = _shared_pos(index, known)
    if not pos:
        return (f"slot {slot}: the seed values share no WordNet type or part of speech "
                f"({', '.join(known)}); left untyped")
    return InferredType(slot=slot, method="wordnet-pos", name=" or ".join(POS_NAMES[p] for p in sorted(pos)),
                        synset=None, pos=tuple(sorted(pos)), seeds_known=len(known), seeds=len(set(values)))


def _shared_pos(index: WordNetIndex, known: list[str]) -> set[str]:
    """The part of speech (nearly) all ``known`` seeds have a sense of, when they are not mostly
    *used* as one ("desert" is a verb first, "purchase" a noun first): of several, the one with
    the largest summed usage share ``sum_v tagged(v, p) / sum_q tagged(v, q)``; empty if none."""
    have = [p for p in POS_NAMES if sum(p in index.pos_of(v) for v in known) >= QUORUM * len(known) - 1e-9]

    def usage(p: str) -> float:
        total = 0.0
        for v in known:
            key = index.key(v)
            tagged = {q: index.tagged.get((key, q), 0) for q in index.pos_of(v)}
            if sum(tagged.values()):
                total += tagged.get(p, 0) / sum(tagged.values())
        return total

    return {max(have, key=lambda p: (usage(p), p))} if have else set()


def types_differ(index: WordNetIndex, a: InferredType, b: InferredType) -> bool:
    """Whether two slot types name different kinds of thing: two synsets neither of which lies
    under the other (*country*, *national capital*), or parts of speech with none in common
    (verb, noun). A synset type is a noun type, so it meets a part-of-speech type that has nouns."""
    if a.synset is not None and b.synset is not None:
        return a.synset not in index._up(b.synset) and b.synset not in index._up(a.synset)
    return not set(a.pos) & set(b.pos)


def has_type(index: WordNetIndex, inferred: InferredType, value: str) -> bool:
    """Whether ``value`` is a WordNet word of the inferred type: for a synset type, a word with a
    sense under it but not a name of the type itself (the class is no member: *musician* names no
    one who plays the violin, *capital* no capital)."""
    if inferred.synset is not None:
        own = index.senses.get(index.key(value), {}).get("n", [])
        return inferred.synset in index.up(value) and inferred.synset not in own
    return bool(index.pos_of(value) & set(inferred.pos))
