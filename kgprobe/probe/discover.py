"""Open-vocabulary concept discovery: value vectors named by a knowledge graph (ConceptVectors).

Hong et al. (2024) go vector -> concept: every column ``v`` of an MLP down projection in the
middle-to-upper layers is projected with the unembedding *without* the final norm,

    logits(v) = W_U · v          (W_U = lm_head.weight, [vocab, d]; no norm, no bias)

and the top-200 tokens of a column are shown to a GPT-4 judge, which names one concept when they
are coherent.  Here the judge is replaced by a lexicon built from the KG:

- a WordNet noun synset stands for the words of its lemmas and of its hyponyms (instance
  hyponyms too) down to a bounded depth ("dog": dog, puppy, hound, pooch, ...);
- a country stands for its name, aliases, capital, demonym, languages and currency.

Words are matched through *keys*: a vocabulary token's key is its text without the leading space,
lower-cased (" Dog", "dog", "DOG" -> "dog"), kept only when it is a word of >= 3 letters and not
a stopword.  A concept is the set of keys its words have in the vocabulary.  For column ``r``
with top-k token set ``T_r`` and concept ``c`` with key set ``K_c``,

    matches[r, c] = |{key(t) : t ∈ T_r} ∩ K_c|            (distinct words, not case variants)

computed for all columns and concepts at once as one sparse product per chunk of columns:
``X [m, n_keys] @ M^T [n_keys, C]`` with ``X[r, key] = 1`` when the key is among r's top-k.
Each column gets the concept with the most matches (ties: fewer keys = the more specific
concept, then the lower concept index); it is kept with ``matches >= min_matches``.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from kgprobe.errors import KgprobeError
from kgprobe.models.memory import plan_batch_size, scan_bytes_per_row
from kgprobe.probe.concepts import QA, load_concepts
from kgprobe.probe.hooks import arch_of, raw_lens_ids, value_vectors

#: the most columns ``chunk="auto"`` projects at once
AUTO_CHUNK = 4096
#: the concept file country concepts (and their questions) come from
COUNTRY_FILE = Path(__file__).resolve().parents[2] / "kg_data" / "concepts" / "countries.jsonl"
SOURCES = ("wordnet", "countries")
CONTINENTS = {"Africa", "Asia", "Europe", "North America", "Oceania", "South America", "Antarctica"}

# Function words and very frequent content words: the lens of almost any column shows some of
# them, so as concept evidence they are noise ("one", "time", "way" are WordNet nouns too).
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how if in into is it its itself just let me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
one two three first new time way thing things people man men year years day days part kind lot use used make
made get got like well back even much many may might must still way good great little new old right big high
""".split())
# first words of country names that name no country
_NAME_WORDS = frozenset("united saint south north east west new central republic democratic equatorial great "
                        "federated islamic kingdom".split())
_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")


def default_layers(n_layers: int) -> list[int]:
    """The upper half, ``range(n_layers // 2, n_layers)``.

    Why: concept vectors sit in middle-to-upper MLPs (ConceptVectors' LLaMA-2-7B concepts were in
    layers 18-25 of 32); lower layers' value vectors mostly promote sub-word pieces and syntax.
    """
    return list(range(n_layers // 2, n_layers))


# ------------------------------------------------------------------ the lens
def lens_top_tokens(model: nn.Module, *, layers: Sequence[int], k: int = 200,
                    chunk: int | str = "auto") -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Top-``k`` tokens of ``W_U · v`` (no final norm, no lm_head bias) for every value vector ``v``
    of ``layers``: ``(top_ids int32 [rows, k] best first, rows)`` with ``rows[r] = (layer, index)``
    in the order of ``layers``, neurons ascending.

    float32 on CPU.  The [rows, vocab] logit matrix is never held: ``chunk`` columns at a time
    go through one matmul into a reused [chunk, vocab] buffer and ``topk``.  ``chunk="auto"``: the
    most rows whose buffer and top-k work space fit half the free memory, at most ``AUTO_CHUNK``.
    """
    arch = arch_of(model)
    layers = [arch.check_layer(layer) for layer in layers]
    if not layers:
        raise KgprobeError("layers is empty: name at least one layer (default_layers(n) gives the upper half)")
    vocab = arch.unembed.shape[0]
    if chunk == "auto":
        chunk = plan_batch_size(bytes_per_item=scan_bytes_per_row(vocab, 4), device="cpu", limit=AUTO_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise KgprobeError(f"chunk must be a positive integer or 'auto', got {chunk!r}")
    weight = arch.unembed.detach().to(device="cpu", dtype=torch.float32)  # converted once, not per chunk
    parts = []
    with torch.no_grad():
        for layer in layers:
            vectors = value_vectors(model, layer)  # [n_neurons, d], offloaded layers too
            parts += [raw_lens_ids(part, weight, k=k).to(torch.int32) for part in vectors.split(chunk)]
    rows = [(layer, j) for layer in layers for j in range(arch.n_neurons)]
    return torch.cat(parts), rows


# ------------------------------------------------------------------ the lexicon
@dataclass
class Lexicon:
    """Candidate concepts and the vocabulary keys that stand for them.

    ``token_key[t]`` is token t's key index (-1: no word key); ``member`` is the sparse CSR
    membership matrix [n_keys, C] (1 where key i belongs to concept c), ``sizes[c] = |K_c|``.
    """

    ids: list[str]
    names: list[str]
    kinds: list[str]
    keys: list[str]
    token_key: torch.Tensor      # [vocab] int64
    member: torch.Tensor         # sparse CSR [n_keys, C] float32
    sizes: torch.Tensor          # [C] int64
    concept_keys: list[frozenset[int]]  # K_c as key indices, for naming matched tokens
    token_text: list[str]        # [vocab] each token decoded alone, for the records

    def __len__(self) -> int:
        return len(self.ids)


def vocabulary_keys(tokenizer) -> tuple[list[str], torch.Tensor, list[str]]:
    """``(keys, token_key [vocab], token_text)``: the word key of every token (see the module
    docstring), -1 for tokens that are no word (pieces shorter than 3 letters, digits, stopwords)."""
    vocab = len(tokenizer)
    text = tokenizer.batch_decode([[t] for t in range(vocab)])
    index: dict[str, int] = {}
    token_key = torch.full((vocab,), -1, dtype=torch.int64)
    for t, s in enumerate(text):
        key = s.strip().lower()
        if len(key) >= 3 and key not in STOPWORDS and _WORD.fullmatch(key):
            token_key[t] = index.setdefault(key, len(index))
    return list(index), token_key, text


def _word_keys(words: Iterable[str], index: dict[str, int]) -> set[int]:
    """Keys of the words that are whole tokens of the vocabulary (multi-word lemmas mostly are not)."""
    return {index[w] for w in (w.strip().lower() for w in words) if w in index}


def _wordnet_concepts(root: Path, index: dict[str, int], depth: int) -> list[tuple[str, str, str, set[int]]]:
    """(id, name, kind, keys) of every noun synset: its lemmas and its hyponyms' down to ``depth``."""
    synsets = _noun_synsets(str(root))
    out = []
    for offset, s in synsets.items():
        words, frontier = list(s.lemmas), [offset]
        for _ in range(depth):
            frontier = [p[1] for o in frontier for p in synsets[o].pointers if p[0] in ("~", "~i") and p[2] == "n"]
            words += [w for o in frontier for w in synsets[o].lemmas]
        out.append((f"wordnet:{offset}", s.lemmas[0], "wordnet", _word_keys(words, index)))
    return out


def _country_core(concept) -> list[str]:
    """The words that name one country alone: name, aliases, capital and demonym (read off the
    concept's questions: "The capital of X is" -> capital, "People from X are called" -> plural
    demonym, whose singular is among the related words)."""
    capital = [q.answer for q in concept.qa if q.source == "countryinfo:capital" and q.answer != concept.name]
    plural = [q.answer for q in concept.qa if q.source == "countryinfo:demonym"]
    demonym = [w for a in plural for w in (a, a.removesuffix("s")) if w in concept.related]
    return [concept.name, *concept.aliases, *capital[:1], *demonym[:1]]


def _country_concepts(path: Path, index: dict[str, int], tokenizer) -> list[tuple[str, str, str, set[int]]]:
    """(id, name, kind, keys) of every country of the concept file: name, aliases, capital, demonym
    (:func:`_country_core`), and languages and currency when no other country shares them
    ("english", "euro", "arabic" would name none; France keeps "french" as its demonym).  The
    file's related words also hold the continent and the neighbours: those are left out.  A name
    that is no single token contributes its first token when that has >= 4 letters and is no
    generic name word ("Bang" of Bangladesh; not "United", or "Com" of Comoros)."""
    concepts = load_concepts(path)
    names = {c.name for c in concepts} | CONTINENTS
    own = [_word_keys(_country_core(c), index) for c in concepts]
    related = [_word_keys([r for r in c.related if r not in names], index) - mine for c, mine in zip(concepts, own)]
    shared = {key for key, n in Counter(key for keys in related for key in keys).items() if n > 1}
    out = []
    for c, mine, near in zip(concepts, own, related):
        keys = mine | (near - shared)
        first = tokenizer(" " + c.name, add_special_tokens=False)["input_ids"][:1]
        head = tokenizer.decode(first).strip().lower()
        if head in index and len(head) >= 4 and head not in _NAME_WORDS:
            keys.add(index[head])
        out.append((c.id, c.name, "country", keys))
    return out


def build_lexicon(tokenizer, *, sources: Sequence[str] = SOURCES, wordnet_dir=None, depth: int = 2,
                  min_keys: int = 3, max_keys: int = 300, country_file=None) -> Lexicon:
    """The candidate concepts of ``sources`` with their key sets, as a sparse membership matrix.

    WordNet noun synsets (~82k) are kept when they have ``min_keys <= |K_c| <= max_keys``: fewer
    words cannot show coherence; a set of hundreds of words (the instance hyponyms of "city") would
    win any column by chance and names no single concept.  Countries are always kept.
    """
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise KgprobeError(f"unknown lexicon source(s) {', '.join(unknown) or '(none given)'}; "
                           f"known: {', '.join(SOURCES)}")
    keys, token_key, token_text = vocabulary_keys(tokenizer)
    index = {key: i for i, key in enumerate(keys)}
    found: list[tuple[str, str, str, set[int]]] = []
    if "wordnet" in sources:
        from kgprobe.kg.datasets.wordnet import available, resolve_dir

        root = resolve_dir(wordnet_dir)
        if problem := available(root):
            raise KgprobeError(problem)
        found += [c for c in _wordnet_concepts(root, index, depth) if min_keys <= len(c[3]) <= max_keys]
    if "countries" in sources:
        found += [c for c in _country_concepts(Path(country_file or COUNTRY_FILE), index, tokenizer) if c[3]]
    found.sort(key=lambda c: c[0])
    rows = torch.tensor([key for c in found for key in sorted(c[3])], dtype=torch.int64)
    cols = torch.tensor([j for j, c in enumerate(found) for _ in c[3]], dtype=torch.int64)
    member = _csr(torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(len(rows)),
                                          (len(keys), len(found)), check_invariants=False))
    return Lexicon(ids=[c[0] for c in found], names=[c[1] for c in found], kinds=[c[2] for c in found],
                   keys=keys, token_key=token_key, member=member,
                   sizes=torch.tensor([len(c[3]) for c in found], dtype=torch.int64),
                   concept_keys=[frozenset(c[3]) for c in found], token_text=token_text)


def _csr(coo: torch.Tensor) -> torch.Tensor:
    """``coo`` coalesced into CSR (sums repeated entries), without torch's "CSR is beta" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return coo.coalesce().to_sparse_csr()


# ------------------------------------------------------------------ WordNet access
@lru_cache(maxsize=2)
def _noun_synsets(root: str) -> dict:
    """offset -> Synset of the nouns (discovery names nouns), from WordNet's cached table."""
    from kgprobe.kg.datasets.wordnet import synsets_by_offset

    return {offset: s for offset, s in synsets_by_offset(root).items() if s.pos == "n"}


# ------------------------------------------------------------------ discovery
def best_concepts(top_ids: torch.Tensor, lexicon: Lexicon, *, max_elements: int = 20_000_000
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(best [rows], matches [rows])``: per row of ``top_ids`` the concept c maximising
    ``matches[r, c]`` (distinct keys of the row's tokens in ``K_c``), ties to the smaller ``|K_c|``
    then the lower index.

    Vectorised: per block of m rows, the key indicator ``X`` [m, n_keys] (sparse; duplicates of a
    key within a row dropped after a sort) times the membership CSR [n_keys, C] gives the dense
    counts [m, C]; ``counts · S + (S - 1 - |K_c|)`` with ``S > max |K_c|`` turns the tie rule into one
    argmax.  Blocks hold at most ``max_elements`` counts.
    """
    n_keys, n_concepts = lexicon.member.shape
    if n_concepts == 0:
        raise KgprobeError("the lexicon has no concepts (check its sources and min_keys)")
    token_key = lexicon.token_key
    if int(top_ids.max()) >= token_key.shape[0]:  # lm_head rows past the tokenizer (padding): no word
        token_key = torch.cat([token_key, token_key.new_full((int(top_ids.max()) + 1 - token_key.shape[0],), -1)])
    span = int(lexicon.sizes.max()) + 1
    tie = span - 1 - lexicon.sizes                                           # [C], bigger = more specific
    step = max(1, max_elements // n_concepts)
    best = torch.empty(top_ids.shape[0], dtype=torch.int64)
    matches = torch.empty(top_ids.shape[0], dtype=torch.int64)
    for start in range(0, top_ids.shape[0], step):
        keys = token_key[top_ids[start:start + step].long()].sort(dim=1).values   # [m, k]
        m = keys.shape[0]
        fresh = keys >= 0
        fresh[:, 1:] &= keys[:, 1:] != keys[:, :-1]                            # first of each key in the row
        r, j = fresh.nonzero(as_tuple=True)
        x = torch.sparse_coo_tensor(torch.stack([r, keys[r, j]]), torch.ones(len(r)), (m, n_keys),
                                    check_invariants=False)
        counts = torch.sparse.mm(_csr(x), lexicon.member).to_dense().round().long()
        pick = (counts * span + tie).argmax(dim=1)
        best[start:start + m] = pick
        matches[start:start + m] = counts.gather(1, pick[:, None])[:, 0]
    return best, matches


def discover_concepts(model: nn.Module, tokenizer, *, layers: Sequence[int] | None = None, k: int = 200,
                      min_matches: int = 5, min_lift: float = 0.0, lexicon: Lexicon | None = None,
                      chunk: int | str = "auto") -> list[dict]:
    """One record per value vector of ``layers`` (default :func:`default_layers`) whose top-``k``
    lens tokens match enough distinct words of their best lexicon concept c (see
    :func:`best_concepts`), best first: more matches, then higher coverage, then (layer, index).

    Enough = ``min(min_matches, max(3, ceil(|K_c| / 2)))``: ``min_matches`` words, or half the words
    of a small concept (a country has 3-6 keys: "Japan, Japanese, Tokyo"), never fewer than 3.
    Default ``min_matches=5`` of the top 200: a concept of ~30 keys (~90 tokens counting case and
    space variants) expects ~0.4 matching tokens among 200 drawn from a 49k vocabulary by chance,
    so 5 distinct words is a >10x enrichment, and five words are about what a reader needs to call
    a list coherent ("dog, puppy, hound, canine, terrier").  ``min_lift > 0`` also asks for
    ``matches >= min_lift · chance``, which weeds out broad synsets ("quality", "message") whose
    hundreds of common nouns reach 5 words in many columns (off by default: chance assumes tokens
    drawn uniformly from the vocabulary, while lens tokens lean to common words).  Record fields: layer, index, concept,
    name, kind, matches, coherence (= matches / k), coverage (= matches / |K_c|), concept_size
    (|K_c|), chance (k · tokens of c / vocab: expected matching tokens of k random tokens),
    matched_tokens (the top-k tokens in c, rank order), top_tokens (the first 20).
    """
    if isinstance(min_matches, bool) or not isinstance(min_matches, int) or min_matches < 1:
        raise KgprobeError(f"min_matches must be a positive integer, got {min_matches!r}")
    arch = arch_of(model)
    layers = default_layers(arch.n_layers) if layers is None else list(layers)
    top_ids, rows = lens_top_tokens(model, layers=layers, k=k, chunk=chunk)
    lexicon = lexicon if lexicon is not None else build_lexicon(tokenizer)
    best, matches = best_concepts(top_ids, lexicon)
    vocab = arch.unembed.shape[0]
    key_tokens = torch.bincount(lexicon.token_key[lexicon.token_key >= 0], minlength=len(lexicon.keys)).float()
    chance = k * torch.sparse.mm(lexicon.member.t(), key_tokens[:, None])[:, 0] / vocab  # [C]
    need = torch.clamp((lexicon.sizes + 1) // 2, min=3).clamp(max=min_matches)   # per concept
    records = []
    for r in ((matches >= need[best]) & (matches >= min_lift * chance[best])).nonzero()[:, 0].tolist():
        c = int(best[r])
        ids = top_ids[r].tolist()
        # decoded once per vocabulary entry with the lexicon (lm_head rows past the tokenizer: "")
        texts = [lexicon.token_text[t] if t < len(lexicon.token_text) else "" for t in ids]
        mine = lexicon.concept_keys[c]
        size = int(lexicon.sizes[c])
        records.append({
            "layer": rows[r][0], "index": rows[r][1], "concept": lexicon.ids[c], "name": lexicon.names[c],
            "kind": lexicon.kinds[c], "matches": int(matches[r]), "coherence": int(matches[r]) / k,
            "coverage": int(matches[r]) / size, "concept_size": size, "chance": float(chance[c]),
            "matched_tokens": [s for t, s in zip(ids, texts)
                               if t < len(lexicon.token_key) and int(lexicon.token_key[t]) in mine],
            "top_tokens": texts[:20],
        })
    return sorted(records, key=_order)


def _order(record: dict) -> tuple:
    return (-record["matches"], -record["coverage"], record["layer"], record["index"], record["concept"])


def best_per_concept(records: Iterable[dict]) -> list[dict]:
    """The best record of each concept (more matches, higher coverage, lower (layer, index)), best first."""
    best: dict[str, dict] = {}
    for record in sorted(records, key=_order):
        best.setdefault(record["concept"], record)
    return sorted(best.values(), key=_order)


# ------------------------------------------------------------------ questions from the KG
def _article(word: str) -> str:
    """"a dog", "an owl"; proper names ("Paris") and plurals-only forms as they are."""
    if word[:1].isupper():
        return word
    return ("an " if word[0] in "aeiou" else "a ") + word


def _short(word: str) -> bool:
    """An answer a cloze can score: at most three words of letters (no "genus Canis"-style labels)."""
    return len(word.split()) <= 3 and _WORD.fullmatch(word.replace(" ", "-")) is not None \
        and not word.startswith(("genus ", "family ", "order ", "class "))


def wordnet_questions(synset_id: str, *, wordnet_dir=None, per_relation: int = 3) -> list[QA]:
    """Cloze questions about a noun synset (``"wordnet:02084071"`` or ``"02084071"``) from WordNet.

    Answers are short lemmas (first lemma of the related synset), never gloss text: examples
    "One example of a dog is" -> "puppy" (hyponyms and instances, first); hypernym "A dog is a
    kind of" -> "canine"; hyponym "A puppy is a kind of" -> "dog"; instance
    "Paris is a" -> "city"; part holonym "The X is part of the" -> whole; meronym "The Y is part of
    the" -> X; gloss "The word for <gloss> is" -> X (skipped when the gloss names the word).
    At most ``per_relation`` questions per relation: the related words SemCor tags most often
    (index.noun's tagged-sense count; WordNet's pointer order without an index file).
    """
    from kgprobe.kg.datasets.wordnet import available, resolve_dir

    root = resolve_dir(wordnet_dir)
    if problem := available(root):
        raise KgprobeError(problem)
    offset = synset_id.removeprefix("wordnet:")
    synsets = _noun_synsets(str(root))
    if offset not in synsets:
        raise KgprobeError(f"{synset_id!r} is no noun synset of {root}/data.noun (expected wordnet:<8-digit offset>)")
    me = synsets[offset]
    name = me.lemmas[0]
    lead = _cap(_article(name))

    tagged = _tagged_counts(str(root))

    def related(symbol: str) -> list[str]:
        words = [synsets[p[1]].lemmas[0] for p in me.pointers if p[0] == symbol and p[2] == "n"]
        words = sorted((w for w in dict.fromkeys(words) if _short(w)), key=lambda w: -tagged.get(w.lower(), 0))
        return words[:per_relation]  # the words running text uses most ("puppy" before "straggle")

    # examples first: their answers are the hyponyms a concept column promotes ("Ohio" for American
    # state), the words whose loss shows a damaged column best
    examples = list(dict.fromkeys(related("~i") + related("~")))[:per_relation]
    frames = ("One example of {} is", "A well-known {} is", "A typical {} is")
    qa = [QA(frame.format(_article(name) if n == 0 else name), w, "wordnet:example")
          for n, (frame, w) in enumerate(zip(frames, examples)) if w.lower() != name.lower()]
    qa += [QA(f"{lead} is a kind of", w, "wordnet:hypernym") for w in related("@")]
    qa += [QA(f"{lead} is a", w, "wordnet:instance") for w in related("@i")]
    if _short(name):
        qa += [QA(f"{_cap(_article(w))} is a kind of", name, "wordnet:hyponym") for w in related("~")]
        qa += [QA(f"{_cap(_the(w))} is part of the", name, "wordnet:meronym") for w in related("%p")]
    qa += [QA(f"{_cap(_the(name))} is part of the", w, "wordnet:holonym") for w in related("#p")]
    first: dict[str, QA] = {}
    for q in qa:  # one answer per prompt: the first (WordNet lists the main hypernym first)
        first.setdefault(q.prompt, q)
    qa = list(first.values())
    gloss = re.sub(r"\s*\([^)]*\)", "", me.gloss.split(";")[0]).strip().rstrip(".")
    words = {w.lower() for lemma in me.lemmas for w in lemma.split()}
    if _short(name) and gloss and not words & set(re.findall(r"[a-z]+", gloss.lower())):
        qa.append(QA(f"The word for {gloss} is", name, "wordnet:gloss"))
    return qa


def _the(word: str) -> str:
    return word if word[:1].isupper() else "the " + word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def concept_questions(concept_id: str, *, wordnet_dir=None, country_file=None) -> list[QA]:
    """Questions for a discovered concept: :func:`wordnet_questions` for ``wordnet:`` ids, the
    concept file's ``qa`` for ``country:`` ids."""
    if concept_id.startswith("wordnet:"):
        return wordnet_questions(concept_id, wordnet_dir=wordnet_dir)
    path = Path(country_file or COUNTRY_FILE)
    found = _country_questions(str(path)).get(concept_id)
    if found is not None:
        return list(found)
    raise KgprobeError(f"unknown concept {concept_id!r}: expected wordnet:<offset> or a country id of {path}")


@lru_cache(maxsize=2)  # asked once per discovered concept
def _country_questions(path: str) -> dict[str, tuple[QA, ...]]:
    return {c.id: tuple(c.qa) for c in load_concepts(path)}


@lru_cache(maxsize=2)
def _tagged_counts(root: str) -> dict[str, int]:
    """Lower-cased noun lemma -> how many of its senses SemCor tags (a frequency proxy); {} without
    WordNet's index files."""
    if not all((Path(root) / f"index.{name}").is_file() for name in ("noun", "verb", "adj", "adv")):
        return {}
    from kgprobe.kg.datasets.wordnet import read_index

    counts: dict[str, int] = {}
    for entry in read_index(Path(root)):
        if entry.pos != "n":
            break  # read_index goes noun, verb, adj, adv
        counts[entry.lemma.replace("_", " ").lower()] = entry.tagged
    return counts
