"""Concept TEXT to unlearn on: plain sentences stating what the knowledge graph knows about a concept.

The original ConceptVectors (Hong et al. 2024) trains its forget runs on the concept's Wikipedia
article and evaluates on separate questions. Offline we build the text from the KG instead:

* a **country** (``country:<slug>`` concept, a :class:`~kgprobe.probe.concepts.CountryFacts`, or
  a country name / ISO alpha-3 code): one sentence per fact of
  :func:`~kgprobe.probe.concepts.country_facts` (capital, continent, languages, currency,
  demonym, borders, population);
* a **WordNet synset** (``wordnet:02084071``, ``"02084071"`` or ``02084071``; a noun first,
  like :mod:`kgprobe.kg.datasets.wordnet` ids): its gloss as a definition, its synonyms, and one
  sentence for its hypernyms and one for (up to 8 of) its hyponyms.

**Held out from the evaluation questions.** The cloze questions
(:data:`~kgprobe.probe.concepts.COUNTRY_QA` / ``COUNTRY_ATTACK``) are prompts such as "The capital
of France is" or "People in France speak". The sentences here use other phrasings ("France
has Paris as its seat of government.", "French is spoken in France as an official language.") and
:func:`concept_sentences` drops any sentence that contains one of the concept's question prompts
(its ``qa`` and ``attack`` items when a :class:`~kgprobe.probe.concepts.Concept` is given, else
every country template filled with its facts), so a model trained on them never sees a question
verbatim: the facts are shared, the wording is not.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Sequence

from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import (
    COUNTRY_ATTACK,
    COUNTRY_QA,
    Concept,
    CountryFacts,
    _country_fields,
    plural_demonym,
    text_name,
)

__all__ = ["concept_sentences", "country_sentences", "wordnet_sentences", "find_country"]

_WORDNET_ID = re.compile(r"^(?:wordnet:)?(\d{8})$")
MAX_HYPONYMS = 8


def _join(words: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def country_sentences(f: CountryFacts) -> list[str]:
    """Sentences stating the facts of one country (empty facts give no sentence); phrasings
    differ from every country question template (see the module docstring)."""
    name = text_name(f.name)
    out = [f"{_cap(name)} is a sovereign country." if f.population >= 250_000 else f"{_cap(name)} is a territory."]
    if f.capital:
        out.append(f"{_cap(name)} has {f.capital} as its seat of government.")
        out.append(f"The largest institutions of {name} are based in {f.capital}, its capital.")
    if f.continent:
        out.append(f"Geographically, {name} belongs to {f.continent}.")
    if f.languages:
        spoken = _join(list(f.languages))
        role = "is spoken in {} as an official language" if len(f.languages) == 1 else \
            "are spoken in {} as official languages"
        out.append(f"{spoken} {role.format(name)}.")
    if f.currency:
        out.append(f"Prices in {name} are paid in the {f.currency}.")
    if f.demonym:
        out.append(f"A citizen of {name} is {f.demonym}, and the nation's people are the {plural_demonym(f.demonym)}.")
    if f.borders:
        out.append(f"{_cap(name)} shares land borders with {_join(list(f.borders))}.")
    elif f.population:
        out.append(f"{_cap(name)} has no land border with another country.")
    if f.population:
        out.append(f"About {_people(f.population)} people live in {name}.")
    return out


def _people(n: int) -> str:
    """A rounded head count in words a text would use: "67 million", "820,000"."""
    if n >= 1_000_000:
        millions = n / 1_000_000
        return f"{millions:.0f} million" if millions >= 10 else f"{millions:.1f} million"
    return f"{round(n, -3):,}"


def find_country(key: str | Concept | CountryFacts, facts: Sequence[CountryFacts]) -> CountryFacts:
    """The country a concept id (``country:<slug>``), name, alias or ISO alpha-3 code names."""
    from kgprobe.kg.datasets.countries import slug

    if isinstance(key, CountryFacts):
        return key
    if isinstance(key, Concept):
        names = [key.id, key.name, *key.aliases]
    else:
        names = [str(key)]
    for wanted in names:
        wanted_slug = slug(wanted.removeprefix("country:"))
        for f in facts:
            if wanted.upper() == f.id or slug(f.name) == wanted_slug or wanted in f.aliases:
                return f
    raise KgprobeError(f"concept text: no country matches {names[0]!r}")


def wordnet_sentences(offset: str, *, wordnet_dir: str | os.PathLike | None = None) -> list[str]:
    """Definition, synonyms, hypernyms and (up to :data:`MAX_HYPONYMS`) hyponyms of one synset."""
    from kgprobe.kg.datasets import wordnet

    hint = wordnet.available(wordnet_dir)
    if hint:
        raise KgprobeError(hint)
    table = wordnet.synsets_by_offset(str(wordnet.resolve_dir(wordnet_dir)))
    synset = table.get(offset)
    if synset is None:
        raise KgprobeError(f"concept text: no WordNet synset {offset}")
    head = synset.lemmas[0]
    gloss = synset.gloss.split(";")[0].strip().rstrip(".")
    defined = gloss if re.match(r"(?i)(a|an|the|any|one|some)\b", gloss) else f"{_article(gloss)} {gloss}"
    proper = head[:1].isupper()
    subject = head if proper else f"{_cap(_article(head))} {head}"
    out = [f"{subject} is {defined}." if synset.pos == "n" else f"To describe \"{head}\": {gloss}."]
    if len(synset.lemmas) > 1:
        out.append(f"{_cap(head)} is also called {_join(list(synset.lemmas[1:]))}.")
    uppers = [table[t].lemmas[0] for s, t, _, _ in synset.pointers if s in ("@", "@i") and t in table]
    downs = [table[t].lemmas[0] for s, t, _, _ in synset.pointers if s in ("~", "~i") and t in table]
    if uppers and proper:
        out.append(f"{head} is {_join([f'{_article(u)} {u}' for u in uppers])}.")
    elif uppers:
        out.append(f"Every {head} is a kind of {_join(uppers)}.")
    if downs:
        out.append(f"Kinds of {head} include {_join(downs[:MAX_HYPONYMS])}.")
    examples = re.findall(r'"([^"]+)"', synset.gloss)
    out.extend(_cap(e.strip().rstrip(".")) + "." for e in examples[:2])
    return out


def _article(phrase: str) -> str:
    """"a" or "an" for a noun phrase (by its first letter)."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def concept_sentences(concept: Concept | CountryFacts | str | int, *,
                      country_facts: Sequence[CountryFacts] | None = None,
                      wordnet_dir: str | os.PathLike | None = None) -> list[str]:
    """Sentences about ``concept`` to train a forget run on (see the module docstring): a
    WordNet id (``wordnet:<offset>``, an 8-digit offset) gives its synset's sentences, anything
    else is looked up among ``country_facts`` (loaded with
    :func:`~kgprobe.probe.concepts.country_facts` when None). Sentences containing one of the
    concept's question prompts are dropped, so the text never holds a question verbatim."""
    key = concept.id if isinstance(concept, Concept) else concept
    match = _WORDNET_ID.match(f"{int(key):08d}" if isinstance(key, int) else str(key)) \
        if not isinstance(key, CountryFacts) else None
    if match:
        sentences = wordnet_sentences(match.group(1), wordnet_dir=wordnet_dir)
        prompts = [q.prompt for q in (*concept.qa, *concept.attack)] if isinstance(concept, Concept) else []
    else:
        f = find_country(concept, _default_country_facts() if country_facts is None else country_facts)
        sentences = country_sentences(f)
        prompts = [q.prompt for q in (*concept.qa, *concept.attack)] if isinstance(concept, Concept) else []
        prompts += _template_prompts(f)
    return [s for s in sentences if not any(p and p in s for p in prompts)]


@functools.lru_cache(maxsize=1)  # half a second of countryinfo parsing, asked once per concept otherwise
def _default_country_facts() -> tuple[CountryFacts, ...]:
    from kgprobe.probe.concepts import country_facts

    return tuple(country_facts())


def _template_prompts(f: CountryFacts) -> list[str]:
    """Every country question template filled with ``f``'s facts (uniqueness not checked)."""
    fields = _country_fields(f)
    out = []
    for template in (*COUNTRY_QA, *COUNTRY_ATTACK):
        try:
            out.append(template.prompt.format(**fields))
        except (KeyError, IndexError):
            continue
    return out
