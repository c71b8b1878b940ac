"""Fact sets for BEAR/LAMA-style probing: each KG fact as one true statement among k false ones.

For a fact ``(subject, relation, object)`` the relation's template (``[X]`` = subject, ``[Y]`` =
object, e.g. ``"The capital of [X] is [Y]."``) gives the true statement; ``k`` alternative
statements put other objects of the same relation in ``[Y]`` (BEAR's scheme: the answer space of
a relation is its objects). An alternative is never true: objects ``o'`` with ``(s, r, o')`` in
the KG (a country with two capitals, a word with two hypernyms) or in ``also_true`` (facts not
asked but still true, such as a word's indirect hypernyms) are left out, and so is any object
whose label equals a true object's label (case-insensitively); objects sharing a label are one
option. Every fact of a relation must have at least ``k`` such objects, else the relation is an
error that names the largest ``k`` possible. The alternatives are drawn without replacement by a
numpy Generator seeded with ``(seed, crc32(relation id))``, so a relation's facts do not depend
on which other relations are built, and the same seed gives the same fact set. Statements
(:func:`kgprobe.probe.statements.fill`) start upper-case ("the USA" -> "The USA has ...").

``k="all"`` is BEAR's own scheme: a relation's answer space is the distinct objects of its facts
*in the set* (after ``max_facts_per_relation`` sampling; one per label, the lowest entity index
first), and each fact's alternatives are every answer-space object except those true for its
subject (the exclusions above), in entity-id order. A fact then ranks its true object against the
whole answer space as lm-pub-quiz does (:mod:`kgprobe.probe.bear` exports such a set), and facts
may differ in their number of alternatives (a subject with two true objects has one fewer); a
fact left without any alternative is an error. Nothing is drawn, so the seed only picks the
sampled facts.

Templates are the templates of BEAR / lm-pub-quiz: one plain sentence per relation.

Files:

* templates (YAML)::

      relations:
        capital: "The capital of [X] is [Y]."
        currency: "The currency of [X] is the [Y]."

  A harvester relation file (``prompts`` with ``<ENT0>``/``<ENT1>`` and a ``reference``) serves
  as well: its first prompt, the reference's head slot as ``[X]`` and tail slot as ``[Y]``.
* fact sets (JSONL): a header line ``{"fact_set": NAME, "templates": {...}, "facts": N}``, then
  one fact per line with the fields of :class:`Fact`; :meth:`FactSet.from_jsonl` reads back the
  identical instances, so a benchmark can reuse them.

Named fact sets (:data:`FACT_SETS`) pair an offline dataset with ``kg_data/facts/<name>.yaml``.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.probe.statements import Statement, fill
from kgprobe.yamlconf import read_yaml, yaml_line

SUBJECT, OBJECT = "[X]", "[Y]"
FACTS_DIR = Path(__file__).resolve().parents[2] / "kg_data" / "facts"
HEADER_KEY = "fact_set"
#: ``k`` for BEAR's scheme: every other object of the relation's facts in the set is an alternative
ALL = "all"


# --------------------------------------------------------------------------- facts
@dataclass(frozen=True)
class Fact:
    """One probe item: the true object and ``k`` wrong ones for ``subject`` under ``relation``."""

    relation: str
    subject: str
    answer: str
    alternatives: tuple[str, ...]
    subject_id: str
    answer_id: str
    alternative_ids: tuple[str, ...]

    @property
    def options(self) -> tuple[str, ...]:
        """The object labels to score, the true one first."""
        return (self.answer, *self.alternatives)


@dataclass(frozen=True)
class FactSet:
    """Templates per relation and the facts built with them."""

    name: str
    templates: dict[str, str]
    facts: list[Fact] = field(default_factory=list)

    def option_statements(self, facts: Sequence[Fact] | None = None) -> list[list[Statement]]:
        """Per fact (default: all) its options' statements, the true one first: what the scorers
        of :mod:`kgprobe.probe.statements` take."""
        return [[fill(self.templates[f.relation], f.subject, obj) for obj in f.options]
                for f in (self.facts if facts is None else facts)]

    def statements(self, fact: Fact) -> list[str]:
        """The fact's statements as text, one per option: the true one first."""
        return [s.text for s in self.option_statements([fact])[0]]

    def to_jsonl(self, path: str | Path) -> Path:
        """Write the header line and one line per fact (see the module docstring)."""
        path = Path(path)
        header = {HEADER_KEY: self.name, "templates": self.templates, "facts": len(self.facts)}
        lines = [header, *(asdict(f) for f in self.facts)]
        path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
        return path

    @classmethod
    def from_jsonl(cls, path: str | Path) -> "FactSet":
        """Read what :meth:`to_jsonl` wrote; a malformed line is a ``KgprobeError`` at its line."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise KgprobeError(f"cannot read fact set: {err}", path=path) from None
        header = _json_line(path, lines, 0)
        if not isinstance(header, dict) or not isinstance(header.get(HEADER_KEY), str) \
                or not isinstance(header.get("templates"), dict):
            raise KgprobeError(f"not a fact set: the first line must be {{\"{HEADER_KEY}\": NAME, "
                               "\"templates\": {...}, \"facts\": N}", path=path, line=1)
        facts = [_fact(path, i + 1, _json_line(path, lines, i), header["templates"]) for i in range(1, len(lines))]
        if header.get("facts") != len(facts):
            raise KgprobeError(f"the header says {header.get('facts')} facts, the file has {len(facts)} "
                               "(truncated?)", path=path, line=1)
        return cls(name=header[HEADER_KEY], templates=dict(header["templates"]), facts=facts)


def _json_line(path: Path, lines: list[str], i: int):
    if i >= len(lines):
        raise KgprobeError("empty file, expected a fact set", path=path)
    try:
        return json.loads(lines[i])
    except ValueError as err:
        raise KgprobeError(f"not JSON: {err}", path=path, line=i + 1) from None


def _fact(path: Path, line: int, row, templates: dict) -> Fact:
    names = [f for f in Fact.__dataclass_fields__]
    if not isinstance(row, dict) or sorted(row) != sorted(names):
        raise KgprobeError(f"a fact line must have the keys {', '.join(names)}", path=path, line=line)
    if row["relation"] not in templates:
        raise KgprobeError(f"relation {row['relation']!r} has no template in the header", path=path, line=line)
    if len(row["alternatives"]) != len(row["alternative_ids"]):
        raise KgprobeError("alternatives and alternative_ids differ in length", path=path, line=line)
    return Fact(**{**row, "alternatives": tuple(row["alternatives"]),
                   "alternative_ids": tuple(row["alternative_ids"])})


# --------------------------------------------------------------------------- templates
def check_template(template) -> str | None:
    """Why ``template`` cannot make statements, or None."""
    if not isinstance(template, str) or not template.strip():
        return f"a template must be a non-empty string with {SUBJECT} and {OBJECT}"
    for slot in (SUBJECT, OBJECT):
        n = template.count(slot)
        if n != 1:
            return f"the template must contain {slot} once, it has it {n} times: {template!r}"
    return None


def load_templates(path: str | Path) -> dict[str, str]:
    """Relation id -> template from a templates file, or from a harvester relation file (keyed by
    its reference's relation). Problems are one ``KgprobeError`` naming file:line."""
    path = Path(path)
    data, root = read_yaml(path)
    if isinstance(data, dict) and "prompts" in data:
        return dict([_relation_file_template(path)[1]])
    if not isinstance(data, dict) or not isinstance(data.get("relations"), dict) or not data["relations"]:
        raise KgprobeError("a templates file must be a mapping `relations: {RELATION: TEMPLATE}` with at least "
                           f"one template, e.g. relations: {{capital: \"The capital of {SUBJECT} is {OBJECT}.\"}}",
                           path=path, line=yaml_line(root, ("relations",)))
    for key in data:
        if key not in ("relations", "description"):
            raise KgprobeError(f"{key}: unknown key (expected relations, description)", path=path,
                               line=yaml_line(root, (key,)))
    templates = {}
    for relation, template in data["relations"].items():
        problem = check_template(template)
        if problem:
            raise KgprobeError(f"relations.{relation}: {problem}", path=path,
                               line=yaml_line(root, ("relations", relation)))
        templates[str(relation)] = template.strip()
    return templates


def template_from_prompt(prompt: str, *, head: int, tail: int) -> str:
    """A harvester prompt as a template: ``<ENT{head}>`` -> ``[X]``, ``<ENT{tail}>`` -> ``[Y]``, and
    the tokenised final `` .`` of the harvester's prompts written as a plain period."""
    text = prompt.replace(f"<ENT{head}>", SUBJECT).replace(f"<ENT{tail}>", OBJECT)
    return re.sub(r"\s+([.!?])$", r"\1", text.strip())


#: a harvester prompt's slot (kgprobe.harvest.relation.SLOT; its files are read as data here, the
#: capabilities do not import each other)
SLOT = re.compile(r"<ENT(\d+)>")


def _relation_file(path: Path) -> tuple[str, str, dict | None]:
    """(name, first prompt, reference or None) of a harvester relation file, read as YAML."""
    data, root = read_yaml(path)
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts or not isinstance(prompts[0], str):
        raise KgprobeError("not a harvester relation file: no `prompts` list", path=path)
    ref = data.get("reference")
    if ref is not None and not (isinstance(ref, dict) and isinstance(ref.get("kg"), str)
                                and isinstance(ref.get("relation"), str)
                                and all(isinstance(ref.get(k, 0), int) for k in ("head", "tail"))):
        raise KgprobeError("reference: expected {kg, relation, head, tail}", path=path,
                           line=yaml_line(root, ("reference",)))
    return str(data.get("name") or path.stem), prompts[0], ref


def _two_slot_template(prompt: str, *, head: int, tail: int, path: Path) -> str:
    template = template_from_prompt(prompt, head=head, tail=tail)
    if SLOT.search(template) or check_template(template):
        raise KgprobeError(f"the first prompt {prompt!r} does not have exactly the slots <ENT{head}> and <ENT{tail}>; "
                           "fact statements have two", path=path)
    return template


def _relation_file_template(path: Path) -> tuple[str, tuple[str, str]]:
    """(reference kg, (reference relation, template)) of one harvester relation file."""
    _, prompt, ref = _relation_file(path)
    if ref is None:
        raise KgprobeError("the relation file has no `reference: {kg, relation, head, tail}`, so its facts are "
                           "unknown", path=path)
    template = _two_slot_template(prompt, head=ref.get("head", 0), tail=ref.get("tail", 1), path=path)
    return ref["kg"], (ref["relation"], template)


def templates_from_relation_files(paths: Sequence[str | Path]) -> tuple[str, dict[str, str]]:
    """The reference KG (dataset name or path) the harvester relation files share and their templates
    (reference relation -> first prompt converted), in the files' order."""
    kg_name, templates, source = None, {}, {}
    for path in map(Path, paths):
        kg, (relation, template) = _relation_file_template(path)
        if kg_name is not None and kg != kg_name:
            raise KgprobeError(f"reference kg {kg!r} differs from {kg_name!r} of {source[next(iter(source))]}",
                               path=path)
        if relation in templates:
            raise KgprobeError(f"relation {relation!r} is also given by {source[relation]}", path=path)
        kg_name, templates[relation], source[relation] = kg, template, path
    if kg_name is None:
        raise KgprobeError("no relation files given")
    return kg_name, templates


# --------------------------------------------------------------------------- building
def build_fact_set(
    kg: KnowledgeGraph,
    templates: Mapping[str, str] | str | Path,
    *,
    k: int | Literal["all"] = 10,
    seed: int = 0,
    relations: Sequence[str] | None = None,
    max_facts_per_relation: int | None = None,
    also_true: KnowledgeGraph | None = None,
    name: str,
) -> FactSet:
    """One :class:`Fact` per distinct triple of each relation (``relations`` order, else the
    templates' order), with ``k`` alternatives drawn as the module docstring says (``k="all"``:
    the whole answer space of the set's facts, BEAR's scheme).

    ``templates`` is a mapping or a templates file; ``max_facts_per_relation`` keeps a seeded
    sample of a relation's triples (in KG order); ``also_true`` holds true triples (same entity
    and relation ids) that are not asked but must never be alternatives. Triples whose subject or
    object label is blank, and repeats of a statement already made, are skipped.
    """
    where = f"in {templates}" if isinstance(templates, (str, Path)) else "in the templates"
    table = load_templates(templates) if isinstance(templates, (str, Path)) else dict(templates)
    if k != ALL and (isinstance(k, bool) or not isinstance(k, int)):
        raise KgprobeError(f"k must be a number of alternatives per fact or {ALL!r}, got {k!r}")
    if k != ALL and k < 1:
        raise KgprobeError(f"k must be at least 1 alternative per fact, got {k}")
    if seed < 0:
        raise KgprobeError(f"the seed must be >= 0, got {seed}")  # numpy's SeedSequence takes no negatives
    if max_facts_per_relation is not None and max_facts_per_relation < 1:
        raise KgprobeError(f"max_facts_per_relation must be at least 1, got {max_facts_per_relation}")
    wanted = list(dict.fromkeys(relations if relations is not None else table))
    for relation in wanted:
        if relation not in table:
            raise KgprobeError(f"relation {relation!r} has no template {where} (templates: {', '.join(table)})")
        if relation not in kg.relation_ids:
            raise KgprobeError(f"relation {relation!r} is not in the KG {kg.name!r} "
                               f"(relations: {', '.join(kg.relation_ids[:30])})")
        problem = check_template(table[relation])
        if problem:
            raise KgprobeError(f"relation {relation!r}: {problem}")
    _check_labels(kg, wanted)
    extra = _also_true(also_true, kg, wanted)
    facts = []
    for relation in wanted:
        facts += _relation_facts(kg, relation, k=k, seed=seed, max_facts=max_facts_per_relation,
                                 extra=extra.get(relation, {}))
    return FactSet(name=name, templates={r: table[r] for r in wanted}, facts=facts)


def _looks_like_id(text: str) -> bool:
    # Wikidata/Freebase/WordNet ids and URIs are one word with digits or separators; names rarely
    # are ("Q42", "wn:dog.n.01"; not "Apollo 11")
    return not re.search(r"\s", text) and bool(re.search(r"\d|[:/#]", text))


def _check_labels(kg: KnowledgeGraph, relations: list[str]) -> None:
    """A KG whose entities (in ``relations``) all lack a name cannot make statements: a label is
    missing when blank, or equal to an id that looks like one (``Q142``, ``02084071``, a URI); an
    id such as ``France`` (a harvest, a TSV of names) is its own name."""
    triples = kg.triples.numpy()
    rows = triples[np.isin(triples[:, 1], [kg.relation_index(r) for r in relations])]
    used = np.unique(rows[:, [0, 2]])
    named = [i for i in used.tolist() if kg.entity_labels[i].strip()
             and not (kg.entity_labels[i] == kg.entity_ids[i] and _looks_like_id(kg.entity_ids[i]))]
    if len(used) and not named:
        example = kg.entity_ids[int(used[0])]
        raise KgprobeError(f"KG has no entity labels: the labels of {kg.name!r} are empty or its ids (e.g. "
                           f"{example!r}); fact statements need names")


def _also_true(also: KnowledgeGraph | None, kg: KnowledgeGraph,
               relations: list[str]) -> dict[str, dict[str, set[str]]]:
    """relation -> subject id -> case-folded labels of its objects in ``also`` (an object's label in
    ``kg`` where ``kg`` has its id, as the alternatives are ``kg``'s entities)."""
    out: dict[str, dict[str, set[str]]] = {}
    if also is None:
        return out
    labels = {**dict(zip(also.entity_ids, also.entity_labels)), **dict(zip(kg.entity_ids, kg.entity_labels))}
    for h, r, t in also.labeled_triples():
        if r in relations:
            out.setdefault(r, {}).setdefault(h, set()).add(labels[t].casefold())
    return out


def relation_rng(seed: int, relation: str) -> np.random.Generator:
    """The generator of one relation: its facts do not depend on the other relations built."""
    return np.random.default_rng([seed, zlib.crc32(relation.encode("utf-8"))])


def _relation_facts(kg: KnowledgeGraph, relation: str, *, k: int | str, seed: int, max_facts: int | None,
                    extra: dict[str, set[str]]) -> list[Fact]:
    """The facts of one relation: triples in KG order, alternatives per the module docstring."""
    ids, labels = kg.entity_ids, kg.entity_labels
    rows = kg.triples[kg.triples[:, 1] == kg.relation_index(relation)][:, [0, 2]].numpy()
    rows = rows[np.array([bool(labels[s].strip() and labels[o].strip()) for s, o in rows.tolist()], dtype=bool)]
    # labels compared case-insensitively, as integer codes: one code per folded label
    folded = {}
    code = np.array([folded.setdefault(label.casefold(), len(folded)) for label in labels], dtype=np.int64)
    # one row per statement (repeated triples, or two entities of one label, say the same thing)
    rows = rows[np.sort(np.unique(code[rows[:, 0]] * len(folded) + code[rows[:, 1]], return_index=True)[1])]
    # the answer space: the relation's objects, one per label (lowest entity index first)
    objects = np.unique(rows[:, 1])
    objects = objects[np.sort(np.unique(code[objects], return_index=True)[1])]
    truth: dict[int, set[int]] = {}
    for s, o in rows.tolist():
        truth.setdefault(s, {folded[x] for x in extra.get(ids[s], ()) if x in folded}).add(int(code[o]))
    rng = relation_rng(seed, relation)
    if max_facts is not None and len(rows) > max_facts:
        rows = rows[np.sort(rng.choice(len(rows), size=max_facts, replace=False))]
    if k == ALL:  # BEAR: the answer space is the objects of the facts asked, in id order
        objects = objects[np.isin(code[objects], code[rows[:, 1]])]
        objects = objects[np.argsort([ids[i] for i in objects.tolist()], kind="stable")]
    pools = {s: objects[~np.isin(code[objects], list(truth[s]))] for s in dict.fromkeys(rows[:, 0].tolist())}
    fewest = min((len(pool) for pool in pools.values()), default=1)
    if k == ALL and not fewest:
        raise KgprobeError(f"relation {relation!r}: a fact has no other object among the {len(objects)} of the "
                           f"set's facts (k={ALL!r}): leave the relation out or ask more facts")
    if k != ALL and fewest < k:
        hint = f"use k <= {fewest}" if fewest else "leave the relation out"
        raise KgprobeError(f"relation {relation!r}: a fact has only {fewest} other objects, fewer than k={k} "
                           f"alternatives ({hint})")
    facts = []
    for s, o in rows.tolist():
        picked = pools[s].tolist() if k == ALL else rng.choice(pools[s], size=k, replace=False).tolist()
        facts.append(Fact(relation=relation, subject=labels[s], answer=labels[o],
                          alternatives=tuple(labels[i] for i in picked), subject_id=ids[s], answer_id=ids[o],
                          alternative_ids=tuple(ids[i] for i in picked)))
    return facts


# --------------------------------------------------------------------------- named fact sets
Graphs = tuple[KnowledgeGraph, KnowledgeGraph | None]  # (facts, also true)


@dataclass(frozen=True)
class FactSetSpec:
    """A named fact set: ``build()`` gives the KG (and its ``also_true`` triples); the templates
    are ``kg_data/facts/<name>.yaml``; ``relations``/``k``/``max_facts_per_relation`` are the
    defaults (``relations=None``: every template)."""

    name: str
    description: str
    build: Callable[[], Graphs]
    relations: tuple[str, ...] | None = None
    k: int = 10
    max_facts_per_relation: int | None = None

    @property
    def templates(self) -> Path:
        return FACTS_DIR / f"{self.name}.yaml"


def _countries() -> Graphs:
    """The countries dataset with the names running text uses ("euro", "Norwegian", "Washington"),
    as the concept questions of :mod:`kgprobe.probe.concepts` word them."""
    from kgprobe.kg.datasets import build_dataset
    from kgprobe.probe.concepts import CAPITAL_NAMES, currency_name, language_name

    kg = build_dataset("countries")
    rename = {"language:": language_name, "currency:": currency_name, "city:": lambda x: CAPITAL_NAMES.get(x, x)}
    labels = [next((f(label) for prefix, f in rename.items() if eid.startswith(prefix)), label)
              for eid, label in zip(kg.entity_ids, kg.entity_labels)]
    return kg.replace(entity_labels=labels), None


# Nations' ids are lower-case short names; the KG predates 1990 (hence Burma, USSR)
_NATIONS_LABELS = {"uk": "the UK", "usa": "the USA", "ussr": "the USSR", "netherlands": "the Netherlands"}


def _nations() -> Graphs:
    from kgprobe.kg.datasets import build_dataset

    kg = build_dataset("nations")
    return kg.replace(entity_labels=[_NATIONS_LABELS.get(e, e.title()) for e in kg.entity_ids]), None


def _sense_index(root: Path) -> dict[tuple[str, str], tuple[str, ...]]:
    """(word, pos letter) -> synset offsets, most frequent sense first, for the words with a sense
    tagged in SemCor: the words that occur in running text."""
    from kgprobe.kg.datasets.wordnet import read_index

    return {(e.lemma.replace("_", " "), e.pos): e.offsets for e in read_index(root) if e.tagged > 0}


@lru_cache(maxsize=1)  # ~5 s of parsing; the graphs are immutable
def _wordnet() -> Graphs:
    """Word facts a reader knows: for every SemCor word (see :func:`_sense_index`), ``hypernym`` and
    ``part_of`` from its first (most frequent) noun sense's direct ``@`` and ``#p`` pointers (first
    lemma of the target: dog -> canine), ``antonym`` from the lexical ``!`` pointers of all its senses.

    The ``wordnet-lexical`` dataset's hypernym is the ancestor closure (dog -> entity), so it is
    built here. Also true (never an alternative): every lemma of every ancestor / whole of every
    sense of the word, the word's own synonyms, and the antonym's synonyms (hot: cold, frigid).
    """
    from kgprobe.kg.datasets.wordnet import available, read_synsets, resolve_dir
    from kgprobe.kg.datasets.wordnet_lexical import ancestors, parents, pointer_target

    root = resolve_dir()
    problem = available(root)
    if problem:
        raise KgprobeError(problem)
    synsets = {(s.pos, s.offset): s for s in read_synsets(root)}
    is_a, whole, similar = parents(synsets, ("@", "@i")), parents(synsets, ("#p",)), parents(synsets, ("&",))
    facts: list[tuple[str, str, str]] = []
    true: list[tuple[str, str, str]] = []
    for (word, pos), offsets in _sense_index(root).items():
        senses = [(pos, o) for o in offsets]
        if pos == "n" and word in synsets[senses[0]].lemmas and word[0].isalpha():  # a lower-case word: no name
            for relation, symbol, up in (("hypernym", "@", is_a), ("part_of", "#p", whole)):
                direct = [pointer_target(p) for p in synsets[senses[0]].pointers if p[0] == symbol]
                facts += [(word, relation, synsets[d].lemmas[0]) for d in direct]
                if direct:
                    true += [(word, relation, lemma) for key in ancestors(senses, up) for lemma in synsets[key].lemmas]
        for key in senses:
            for pointer in synsets[key].pointers:
                if pointer[0] == "!" and synsets[key].lemmas[int(pointer[3][:2], 16) - 1] == word:
                    other = synsets[pointer_target(pointer)]
                    facts.append((word, "antonym", other.lemmas[int(pointer[3][2:], 16) - 1]))
                    opposite = pointer_target(pointer)
                    true += [(word, "antonym", lemma) for k in (opposite, *similar[opposite])
                             for lemma in synsets[k].lemmas]
    relations = {"hypernym": "hypernym", "part_of": "part of", "antonym": "antonym"}
    return (KnowledgeGraph.from_labeled_triples(list(dict.fromkeys(facts)), relation_labels=relations,
                                                name="wordnet-facts"),
            KnowledgeGraph.from_labeled_triples(true, relation_labels=relations, name="wordnet-facts-also-true"))


FACT_SETS: dict[str, FactSetSpec] = {spec.name: spec for spec in (
    FactSetSpec("countries", "countries (countryinfo): capital, currency, official language, subregion, borders, "
                "demonym; `region` (5 continents) needs k <= 4", _countries,
                relations=("capital", "currency", "language", "subregion", "borders", "demonym")),
    FactSetSpec("wordnet", "WordNet 3.0 words used in SemCor: direct hypernym and part holonym of the first "
                "sense, antonym", _wordnet, max_facts_per_relation=1000),
    FactSetSpec("nations", "Nations (pykeen's copy, 14 countries of the 1950s-60s): treaties, alliances, "
                "visits, aid, ...", _nations, k=3),
)}


def load_fact_set(
    name_or_path: str | Path,
    *,
    templates: str | Path | None = None,
    k: int | Literal["all"] | None = None,
    seed: int = 0,
    relations: Sequence[str] | None = None,
    max_facts_per_relation: int | None = None,
) -> FactSet:
    """A fact set from a name in :data:`FACT_SETS`, a harvest run directory (its tuples.jsonl as a
    one-relation KG, the template its first prompt), a harvester relation file (its reference KG
    and first prompt), or a KG file/directory kgprobe reads (with ``templates``).

    ``templates`` replaces a named set's templates; ``k`` (a count, or ``"all"``: BEAR's scheme) and
    ``max_facts_per_relation`` default to the named set's (10 and no cap elsewhere).
    """
    path = Path(name_or_path)
    spec = FACT_SETS.get(str(name_or_path))
    also = None
    if spec is not None:
        (kg, also), table, name = spec.build(), templates or spec.templates, spec.name
        relations = relations if relations is not None or templates else spec.relations
        k = spec.k if k is None else k
        max_facts_per_relation = max_facts_per_relation or spec.max_facts_per_relation
    elif path.is_dir() and (path / "tuples.jsonl").is_file():
        kg, table = harvest_run_kg(path)
        table, name = templates or table, path.name
    elif path.is_file() and path.suffix in (".yaml", ".yml", ".json") and templates is None:
        kg_name, table = templates_from_relation_files([path])
        (kg, also), name = _reference_kg(kg_name), path.stem
    elif path.exists():
        if templates is None:
            raise KgprobeError(f"{path}: a KG needs templates (relations: {{RELATION: \"... [X] ... [Y] ...\"}}); "
                               "pass a templates file")
        from kgprobe.kg.formats import load_kg

        kg, table, name = load_kg(path, progress=False), templates, path.stem
    else:
        raise KgprobeError(f"unknown fact set {str(name_or_path)!r}: neither a named set "
                           f"({', '.join(FACT_SETS)}) nor a path")
    return build_fact_set(kg, table, k=10 if k is None else k, seed=seed, relations=relations,
                          max_facts_per_relation=max_facts_per_relation, also_true=also, name=name)


def _reference_kg(kg_name: str) -> Graphs:
    """A harvester reference: a named fact set's graphs (readable labels), a dataset, or a KG path."""
    from kgprobe.kg.datasets import DATASETS, build_dataset
    from kgprobe.kg.formats import load_kg

    if kg_name in FACT_SETS:
        return FACT_SETS[kg_name].build()
    return (build_dataset(kg_name) if kg_name in DATASETS else load_kg(kg_name, progress=False)), None


def harvest_run_kg(run_dir: str | Path) -> tuple[KnowledgeGraph, dict[str, str]]:
    """A harvest run as a one-relation KG (its tuples.jsonl: the reference's head and tail slots, else
    slots 0 and 1) and the template of its relation.yaml's first prompt, keyed by the relation's name."""
    run_dir = Path(run_dir)
    name, prompt, ref = _relation_file(run_dir / "relation.yaml")
    head, tail = (ref.get("head", 0), ref.get("tail", 1)) if ref else (0, 1)
    template = _two_slot_template(prompt, head=head, tail=tail, path=run_dir / "relation.yaml")
    path, triples = run_dir / "tuples.jsonl", []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entities = json.loads(line)["entities"]
            triples.append((str(entities[head]), name, str(entities[tail])))
        except (ValueError, KeyError, TypeError, IndexError):
            raise KgprobeError(f"not a harvest tuple line with slots {head} and {tail}", path=path, line=n) from None
    return KnowledgeGraph.from_labeled_triples(triples, name=name), {name: template}
