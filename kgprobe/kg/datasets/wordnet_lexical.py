"""WordNet 3.0 at the level of words: lemma -> lemma facts for judging harvested word pairs.

The ``wordnet`` dataset keeps WN18RR's synset ids, which a language model never says; a
harvest of antonyms or hypernyms produces words. Here every lemma (``_`` read as a space, case
kept, adjective markers such as ``(a)`` stripped, as :mod:`wordnet` does) is one entity whose
id and label are the word itself, and six relations join words:

* ``antonym``: lexical ``!`` pointers, which name the two words (hot <-> cold), both ways, and
  WordNet's indirect antonyms of adjectives: every word of a head adjective's cluster (the head
  and its ``&`` similar-to satellites) against every word of its antonym's cluster (soggy <-> arid);
* ``synonym``: every ordered pair of distinct lemmas of one synset (big -> large), and of an
  adjective cluster's head and its ``&`` satellites (big <-> huge), both ways;
* ``hypernym``: a noun lemma -> every lemma of every strict ancestor synset through ``@`` and
  ``@i`` (dog -> canine, carnivore, animal, ...), over all the lemma's senses;
* ``instance_of``: a lemma of a synset with ``@i`` pointers -> the lemmas of those instance
  hypernyms and all their ancestors (Mozart -> composer, musician, person, ...);
* ``part_of``: part -> whole through part holonyms ``#p``, transitively (wheel -> wheeled
  vehicle, car door -> car -> motor vehicle, ...);
* ``derivation``: lexical ``+`` pointers (teach <-> teacher), both ways;
* ``pertainym``: an adjective's lexical ``\\`` pointer to the noun it pertains to (French ->
  France, musical -> music), one way.

The files are read with :func:`wordnet.read_synsets`, from the same directory the ``wordnet``
dataset uses. Sizes for WordNet 3.0: 148,730 lemmas and 3,596,161 triples (hypernym 2,316,046,
antonym 454,898, synonym 353,634, instance_of 332,573, part_of 101,679, derivation 32,850,
pertainym 4,481); the build takes about 20 s and 0.9 GB on one core. The hypernym closure stays well under 5M
triples, so it is complete (no depth cap). Self-pairs (a word that is also its own ancestor's
lemma, in another sense) are dropped. Entities are sorted by id, triples by relation (in
:data:`RELATIONS` order), head and tail.
"""
from __future__ import annotations

import os
from collections import deque

import numpy as np
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.datasets.wordnet import Synset, available, read_synsets, resolve_dir
from kgprobe.kg.graph import KnowledgeGraph

RELATIONS: dict[str, str] = {
    "antonym": "antonym",
    "synonym": "synonym",
    "hypernym": "hypernym (any ancestor)",
    "instance_of": "instance of",
    "part_of": "part of",
    "derivation": "derivationally related form",
    "pertainym": "pertains to",
}

_Key = tuple[str, str]  # (file pos letter, offset)


def pointer_target(pointer: tuple[str, str, str, str]) -> _Key:
    """The synset a pointer leads to (satellite adjectives live in the ``a`` file)."""
    _, offset, pos, _ = pointer
    return ("a" if pos == "s" else pos, offset)


def ancestors(start: list[_Key], parents: dict[_Key, list[_Key]]) -> list[_Key]:
    """``start`` and every synset above it through ``parents``, each once (breadth first)."""
    seen = dict.fromkeys(start)
    queue = deque(start)
    while queue:
        for parent in parents.get(queue.popleft(), ()):
            if parent not in seen:
                seen[parent] = None
                queue.append(parent)
    return list(seen)


class _Pairs:
    """Lemma index pairs of one relation, collected as arrays and deduplicated at the end."""

    def __init__(self, n_lemmas: int):
        self.n = n_lemmas
        self.chunks: list[np.ndarray] = []

    def add(self, heads, tails) -> None:
        """Every head with every tail (a cross product of the two index lists)."""
        h = np.asarray(heads, dtype=np.int64)
        t = np.asarray(tails, dtype=np.int64)
        if len(h) and len(t):
            self.chunks.append((h[:, None] * self.n + t[None, :]).ravel())

    def array(self) -> np.ndarray:
        """``(n, 2)`` sorted unique (head, tail) pairs, self-pairs dropped."""
        if not self.chunks:
            return np.zeros((0, 2), dtype=np.int64)
        codes = np.unique(np.concatenate(self.chunks))
        pairs = np.stack([codes // self.n, codes % self.n], axis=1)
        return pairs[pairs[:, 0] != pairs[:, 1]]


def _word(synset: Synset, number: int) -> str | None:
    """The 1-based ``number``-th lemma of ``synset`` (None for a malformed number)."""
    return synset.lemmas[number - 1] if 0 < number <= len(synset.lemmas) else None


def _lexical_pairs(synsets: dict[_Key, Synset], symbol: str, *, sources: str = "nvar") -> list[tuple[str, str]]:
    """(source word, target word) of every lexical pointer ``symbol`` (word numbers non-zero) from
    synsets of the parts of speech ``sources``."""
    pairs = []
    for synset in synsets.values():
        if synset.pos not in sources:
            continue
        for pointer in synset.pointers:
            if pointer[0] != symbol or pointer[3] == "0000":
                continue
            target = synsets.get(pointer_target(pointer))
            if target is None:
                raise KgprobeError(f"synset {synset.offset} points to unknown synset {pointer[1]} ({pointer[2]})")
            src, tgt = _word(synset, int(pointer[3][:2], 16)), _word(target, int(pointer[3][2:], 16))
            if src is not None and tgt is not None:
                pairs.append((src, tgt))
    return pairs


def parents(synsets: dict[_Key, Synset], symbols: tuple[str, ...]) -> dict[_Key, list[_Key]]:
    """Synset -> the synsets its ``symbols`` pointers lead to (semantic and lexical alike)."""
    return {key: [pointer_target(p) for p in synset.pointers if p[0] in symbols]
            for key, synset in synsets.items()}


def build(*, wordnet_dir: str | os.PathLike | None = None) -> KnowledgeGraph:
    """Parse WordNet 3.0 into the lemma-level :class:`KnowledgeGraph` ``wordnet-lexical``."""
    root = resolve_dir(wordnet_dir)
    problem = available(root)
    if problem:
        raise KgprobeError(problem)

    synsets: dict[_Key, Synset] = {(s.pos, s.offset): s for s in read_synsets(root)}
    lemmas = sorted({lemma for s in synsets.values() for lemma in s.lemmas})
    index = {lemma: i for i, lemma in enumerate(lemmas)}
    ids = {key: [index[lemma] for lemma in s.lemmas] for key, s in synsets.items()}
    pairs = {name: _Pairs(len(lemmas)) for name in RELATIONS}

    for symbol, name in (("!", "antonym"), ("+", "derivation")):
        for a, b in _lexical_pairs(synsets, symbol):
            pairs[name].add([index[a]], [index[b]])
            pairs[name].add([index[b]], [index[a]])

    similar = parents(synsets, ("&",))
    for key, members in ids.items():
        pairs["synonym"].add(members, members)
        for other in similar[key]:  # an adjective cluster: head <-> satellites (big ~ huge)
            pairs["synonym"].add(members, ids[other])
            pairs["synonym"].add(ids[other], members)
    # indirect antonyms: a direct antonym pair's clusters oppose each other (wet ~ soggy <-> dry ~ arid)
    for key, synset in synsets.items():
        for pointer in synset.pointers:
            if pointer[0] == "!" and synset.pos == "a":
                other = pointer_target(pointer)
                here = [m for k in (key, *similar[key]) for m in ids[k]]
                there = [m for k in (other, *similar[other]) for m in ids[k]]
                pairs["antonym"].add(here, there)

    for a, b in _lexical_pairs(synsets, "\\", sources="a"):  # adverbs' \\ point to adjectives instead
        pairs["pertainym"].add([index[a]], [index[b]])

    is_a = parents(synsets, ("@", "@i"))
    whole = parents(synsets, ("#p",))
    for key, synset in synsets.items():
        if synset.pos != "n":
            continue
        above = ancestors(is_a[key], is_a)
        if above:
            pairs["hypernym"].add(ids[key], np.concatenate([ids[a] for a in above]))
        instance_of = [pointer_target(p) for p in synset.pointers if p[0] == "@i"]
        if instance_of:
            classes = ancestors(instance_of, is_a)
            pairs["instance_of"].add(ids[key], np.concatenate([ids[c] for c in classes]))
        wholes = ancestors(whole[key], whole)
        if wholes:
            pairs["part_of"].add(ids[key], np.concatenate([ids[w] for w in wholes]))

    blocks = []
    for r, name in enumerate(RELATIONS):
        ht = pairs[name].array()
        blocks.append(np.column_stack([ht[:, 0], np.full(len(ht), r, dtype=np.int64), ht[:, 1]]))
    return KnowledgeGraph(
        entity_ids=lemmas,
        relation_ids=list(RELATIONS),
        triples=torch.from_numpy(np.concatenate(blocks)),
        entity_labels=lemmas,
        relation_labels=list(RELATIONS.values()),
        name="wordnet-lexical",
    )
