r"""Seeded synthetic knowledge graphs of any size, with entity labels and descriptions.

Nothing is read from disk, so the ``synthetic-*`` datasets are always available; they exist to
measure how kgprobe scales (1M and 5M entities) on graphs shaped like real KGs.

The generative model, for :math:`n` entities, :math:`R` relations and a target of
:math:`m = \mathrm{round}(\rho n)` triples (:math:`\rho` = ``triples_per_entity``):

* **Entity popularity.** A seeded permutation :math:`\pi` gives every entity a rank
  :math:`\pi(e) \in \{1, \dots, n\}`; heads and tails are drawn independently from the
  (continuous-rank) Zipf law

  .. math:: P(e) = \frac{(\pi(e) + 1)^{1-a} - \pi(e)^{1-a}}{(n + 1)^{1-a} - 1}
            \approx \frac{(1-a)\, \pi(e)^{-a}}{(n+1)^{1-a} - 1}, \qquad a = 0.8,

  sampled exactly as :math:`\lfloor (1 + u((n+1)^{1-a} - 1))^{1/(1-a)} \rfloor` with
  :math:`u \sim U[0, 1)`. An entity's expected degree is thus proportional to
  :math:`\pi(e)^{-a}`, and the degree distribution has the power-law tail
  :math:`P(\deg = k) \propto k^{-(1 + 1/a)} = k^{-2.25}` (real KGs measure between 2 and 3).
  Of the :math:`2m` triple ends, :math:`2m - n` are drawn from this law (see coverage), so
  the most popular entity has about :math:`(2m - n)(2^{1-a} - 1) / ((n+1)^{1-a} - 1)` edges:
  ≈ 250× the mean degree :math:`2m/n` at :math:`n = 10^4`, ≈ 9,000× at :math:`n = 10^6`.
* **Relations.** Independently, the same law over a seeded permutation :math:`\sigma` of the
  relations with exponent :math:`b = 1`, i.e.
  :math:`P(r) = \log\frac{\sigma(r) + 1}{\sigma(r)} / \log(R + 1)`.
* **Coverage.** So that no entity is isolated, the first :math:`n` draws give each entity
  :math:`e` one triple :math:`(e, r, t)` or, with probability 1/2, :math:`(t, r, e)`, with
  :math:`t` and :math:`r` from the laws above (:math:`t = e + 1 \bmod n` if :math:`t` came out
  equal to :math:`e`).
* **Deduplication.** Self-loops are discarded and repeated triples keep their first draw;
  more triples are drawn until :math:`m` distinct ones exist (or :math:`\max(m, n)` when
  :math:`\rho < 1`, since every entity keeps its coverage triple), and the result is sorted by
  ``(head, relation, tail)``.

Text is made of seeded pseudo-words (consonant-vowel syllables): one table of distinct words is
built once, and labels (two capitalised words, distinct across entities), descriptions
("Kasilo Venu is a tarim from Memodu, known for its sorivan." with class, place and noun drawn
from the word table) and relation labels are all numpy indexing into it. Entity ids are
``E0000123``, relation ids ``R007`` (wider when there are more). The same arguments always give
the same graph, so a saved KG directory is byte-identical.
"""
from __future__ import annotations

import numpy as np
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

#: Registered dataset names and their number of entities.
SIZES: dict[str, int] = {
    "synthetic-10k": 10_000,
    "synthetic-100k": 100_000,
    "synthetic-1m": 1_000_000,
    "synthetic-5m": 5_000_000,
}

ENTITY_EXPONENT = 0.8    # a: Zipf exponent of head/tail popularity
RELATION_EXPONENT = 1.0  # b: Zipf exponent of relation frequency

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]  # 70
_ENDINGS = ["", "", "", "n", "r", "s", "l", "m"]  # an optional closing consonant
_VOCABULARY = 8192  # distinct pseudo-words: 8192**2 distinct two-word labels
_CLASSES = 40       # entity classes named in the descriptions
_PLACES = 400       # places named in the descriptions
_CHUNK = 1 << 17    # entities per vectorised string step (bounds the fixed-width temporaries)


def _zipf_sampler(rng: np.random.Generator, n: int, exponent: float):
    r"""A function ``size -> int64 array`` drawing ``item[k]`` for rank ``k`` (1-based) with
    probability :math:`\int_k^{k+1} x^{-s} dx / \int_1^{n+1} x^{-s} dx`, by the closed-form
    inverse CDF (no table lookup, so it costs the same for a million items as for ten)."""
    rank_to_item = rng.permutation(n).astype(np.int64)
    top = float(n + 1)

    def draw(size: int) -> np.ndarray:
        u = rng.random(size)
        if exponent == 1.0:
            x = top ** u
        else:
            c = 1.0 - exponent
            x = (1.0 + u * (top ** c - 1.0)) ** (1.0 / c)
        ranks = np.clip(np.floor(x).astype(np.int64), 1, n)
        return rank_to_item[ranks - 1]

    return draw


def _words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct pseudo-words of two or three syllables, lower case."""
    s, e = len(_SYLLABLES), len(_ENDINGS)
    two, three = s * s * e, s * s * s * e
    picks = rng.choice(two + three, size=count, replace=False)
    words = []
    for k in picks.tolist():
        parts, k = (2, k) if k < two else (3, k - two)
        ending, k = _ENDINGS[k % e], k // e
        syllables = []
        for _ in range(parts):
            syllables.append(_SYLLABLES[k % s])
            k //= s
        words.append("".join(syllables) + ending)
    return words


def _triples(rng: np.random.Generator, n: int, num_relations: int, target: int) -> np.ndarray:
    entity = _zipf_sampler(rng, n, ENTITY_EXPONENT)
    relation = _zipf_sampler(rng, num_relations, RELATION_EXPONENT)

    # Coverage: one triple per entity, in a random direction.
    own = np.arange(n, dtype=np.int64)
    other = entity(n)
    other = np.where(other == own, (own + 1) % n, other)
    swap = rng.random(n) < 0.5
    if float(n) * n * num_relations >= 2.0 ** 62:
        raise KgprobeError(f"synthetic KG too large to encode: {n} entities x {num_relations} relations")
    span = np.int64(num_relations) * n

    def encode(h: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (h * num_relations + r) * n + t

    keys = encode(np.where(swap, other, own), relation(n), np.where(swap, own, other))
    for _ in range(100):  # rounds of top-up draws; two or three suffice unless the graph is near-complete
        _, first = np.unique(keys, return_index=True)  # first draw of each distinct triple
        first.sort()
        first = first[keys[first] // span != keys[first] % n]  # no self-loops
        have = len(first)
        if have >= target:
            break
        extra = int((target - have) * 1.1) + 16
        heads, rels = entity(extra), relation(extra)
        keys = np.concatenate([keys, encode(heads, rels, entity(extra))])
    keep = keys[first[:max(target, min(have, n))]]
    keep.sort()
    return np.stack([keep // span, (keep // n) % num_relations, keep % n], axis=1)


def _join(*parts: np.ndarray | str) -> np.ndarray:
    out = parts[0]
    for part in parts[1:]:
        out = np.char.add(out, part)
    return out


def synthetic_kg(num_entities: int, *, num_relations: int = 50, triples_per_entity: float = 4.5,
                 seed: int = 0, name: str | None = None) -> KnowledgeGraph:
    """A seeded synthetic KG of ``num_entities`` entities (see the module docstring for the model).

    About ``round(triples_per_entity * num_entities)`` distinct triples without self-loops;
    every entity has a label (two capitalised pseudo-words, unique) and a one-sentence
    description. ``name`` defaults to ``synthetic-<num_entities>``.
    """
    n, num_relations = int(num_entities), int(num_relations)
    if n < 2:
        raise KgprobeError(f"a synthetic KG needs at least 2 entities, got {num_entities}")
    if num_relations < 1:
        raise KgprobeError(f"a synthetic KG needs at least 1 relation, got {num_relations}")
    if not triples_per_entity >= 0:
        raise KgprobeError(f"triples_per_entity must be >= 0, got {triples_per_entity}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6B67]))
    target = int(round(triples_per_entity * n))
    triples = _triples(rng, n, num_relations, target)

    words = _words(rng, _VOCABULARY)
    lower = np.array(words)
    upper = np.array([w.capitalize() for w in words])
    classes = lower[rng.choice(_VOCABULARY, _CLASSES, replace=False)]
    places = upper[rng.choice(_VOCABULARY, _PLACES, replace=False)]
    pair = rng.choice(_VOCABULARY * _VOCABULARY, size=n, replace=False)
    cls = _zipf_sampler(rng, _CLASSES, 1.0)(n)
    place = _zipf_sampler(rng, _PLACES, 1.0)(n)
    noun = rng.integers(0, _VOCABULARY, size=n)
    article = np.where(np.isin(np.array([c[0] for c in classes.tolist()]), list(_VOWELS)), "an ", "a ")

    labels: list[str] = []
    descriptions: list[str] = []
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        label = _join(upper[pair[sl] // _VOCABULARY], " ", upper[pair[sl] % _VOCABULARY])
        desc = _join(label, " is ", article[cls[sl]], classes[cls[sl]], " from ", places[place[sl]],
                     ", known for its ", lower[noun[sl]], ".")
        labels += label.tolist()
        descriptions += desc.tolist()

    width = max(7, len(str(n - 1)))
    rwidth = max(3, len(str(num_relations - 1)))
    rel_words = rng.choice(_VOCABULARY, num_relations, replace=False)
    forms = ("has {}", "{} of", "is {} to", "{}s")
    relation_labels = [forms[i % len(forms)].format(words[w]) for i, w in enumerate(rel_words.tolist())]
    return KnowledgeGraph(
        entity_ids=tuple(map(f"E{{:0{width}d}}".format, range(n))),
        relation_ids=tuple(f"R{i:0{rwidth}d}" for i in range(num_relations)),
        triples=torch.from_numpy(triples),
        entity_labels=tuple(labels),
        entity_descriptions=tuple(descriptions),
        relation_labels=tuple(relation_labels),
        name=name or f"synthetic-{n}",
    )


def build(name: str, **kwargs) -> KnowledgeGraph:
    """The registered dataset ``name`` (a key of :data:`SIZES`); ``kwargs`` go to :func:`synthetic_kg`."""
    if name not in SIZES:
        raise KgprobeError(f"unknown synthetic dataset {name!r}; known: {', '.join(SIZES)}")
    return synthetic_kg(SIZES[name], name=name, **kwargs)


def available() -> None:
    """Always None: a synthetic KG needs no source."""
    return None


def description(name: str) -> str:
    """The one-line description ``kgprobe data list`` shows for ``name``."""
    n = SIZES[name]
    return (f"Synthetic: {n:,} entities, 50 relations, {round(4.5 * n):,} triples, Zipf degrees, "
            "pseudo-word labels and descriptions (seeded, no source)")
