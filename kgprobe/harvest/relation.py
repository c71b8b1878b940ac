"""A relation to harvest: prompts with ``<ENT0>..<ENTk-1>`` slots, seed tuples, entity constraints.

File format (YAML or JSON)::

    name: capital_of
    prompts:
      - "<ENT0> is the capital of <ENT1> ."
      - "The capital of <ENT1> is <ENT0> ."
    seeds:
      - [Paris, France]
      - [Tokyo, Japan]
    constraints:            # optional
      max_words: 3          # per entity
      stopwords: english    # language of the stopword list, or "none"
      capitalization: any   # any | title (every word starts upper-case) | lower
      max_per_slot: {0: 1, 1: 1}  # at most one output tuple per value of a slot (one capital per
                                  # country, one country per capital)
      share_slots: [1]      # candidates sharing slot 1's value compete in the ranking
                            # (default: the slots of max_per_slot)
      types:                # slot 1 must be a country, as the LM sees it (see entity_types.py)
        1: {type: country, against: {state: [Texas], city: [Lagos]}}
                            # (slots without written types get one inferred from the seeds'
                            # WordNet types, see slot_types.py)
      symmetric: false      # default: inferred (see properties.py)
      functional: true      # slot 0 has one value of the others; default: inferred from the seeds
    reference:              # optional: how `harvest-eval` finds the true tuples
      kg: countries
      relation: capital
      head: 1               # slot that is the reference triple's head
      tail: 0

Every prompt must use each slot exactly once; every seed has one entity per slot.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kgprobe.errors import KgprobeError
from kgprobe.harvest.stopwords import stopwords
from kgprobe.yamlconf import config_error, read_yaml, validate

SLOT = re.compile(r"<ENT(\d+)>")
# the two slots of a type template (constraints.types.N.template); typing itself is in entity_types.py
TYPE_SLOT = "<TYPE>"
ENT_SLOT = "<ENT>"


class SlotType(BaseModel):
    """``constraints.types.N``: the type slot N's values must have, as the LM sees it."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1)
    against: dict[str, list[str]] = Field(min_length=1, description="contrast type -> examples")
    template: str = "<ENT> is a <TYPE> ."


def check_slot_type(spec: SlotType) -> str | None:
    """Why ``spec`` is unusable, or None."""
    if spec.template.count(ENT_SLOT) != 1 or spec.template.count(TYPE_SLOT) != 1:
        return f"template {spec.template!r} must contain {ENT_SLOT} and {TYPE_SLOT} once each"
    if spec.template.index(ENT_SLOT) > spec.template.index(TYPE_SLOT):
        return f"template {spec.template!r}: {ENT_SLOT} must come before {TYPE_SLOT}"
    if spec.type in spec.against:
        return f"type {spec.type!r} is also listed under 'against'"
    for name, examples in spec.against.items():
        if not examples or not all(e.strip() for e in examples):
            return f"against.{name}: give at least one non-empty example"
    return None


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_words: int = Field(default=3, ge=1)
    min_chars: int = Field(default=3, ge=1)
    stopwords: str = "english"
    capitalization: Literal["any", "title", "lower"] = "any"
    max_per_slot: dict[int, int] = Field(default_factory=dict)
    share_slots: list[int] | None = None
    types: dict[int, SlotType] = Field(default_factory=dict)
    symmetric: bool | None = None  # None: inferred (kgprobe.harvest.properties)
    functional: bool | None = None  # None: inferred from the seeds


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kg: str = Field(min_length=1)
    relation: str = Field(min_length=1, pattern=r"^[^:]+$")  # harvest-eval splits KG:RELATION at the last ':'
    head: int = Field(default=0, ge=0)
    tail: int = Field(default=1, ge=0)


class RelationFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    prompts: list[str] = Field(min_length=1)
    seeds: list[list[str]]  # at least two: checked in relation_from_file, with a clearer message
    constraints: Constraints = Field(default_factory=Constraints)
    reference: Reference | None = None


@dataclass(frozen=True)
class Template:
    """A prompt cut at its slots: ``texts[0] <ENT order[0]> texts[1] ... texts[k]``.

    ``order`` lists the slot numbers in the order they appear in the text.
    """

    prompt: str
    texts: tuple[str, ...]
    order: tuple[int, ...]

    @classmethod
    def parse(cls, prompt: str) -> "Template":
        texts, order, last = [], [], 0
        for m in SLOT.finditer(prompt):
            texts.append(prompt[last:m.start()])
            order.append(int(m.group(1)))
            last = m.end()
        texts.append(prompt[last:])
        return cls(prompt=prompt, texts=tuple(texts), order=tuple(order))

    @property
    def arity(self) -> int:
        return len(self.order)

    def fill(self, entities: tuple[str, ...] | list[str]) -> str:
        out = self.texts[0]
        for slot, text in zip(self.order, self.texts[1:]):
            out += entities[slot] + text
        return out


def check_prompt(prompt: str, arity: int) -> str | None:
    """Why ``prompt`` is not a valid prompt for ``arity`` slots, or None."""
    if not prompt.strip():
        return "empty prompt"
    slots = [int(s) for s in SLOT.findall(prompt)]
    if re.search(r"<ENT(?!\d+>)", prompt):
        return "malformed slot (write <ENT0>, <ENT1>, ...)"
    for s in slots:
        if s >= arity:
            return f"unknown slot <ENT{s}> (the seeds have {arity} entities: <ENT0>..<ENT{arity - 1}>)"
    for s in range(arity):
        n = slots.count(s)
        if n == 0:
            return f"slot <ENT{s}> is missing"
        if n > 1:
            return f"slot <ENT{s}> is used {n} times"
    if not SLOT.sub("", prompt).strip():
        return "the prompt has no text besides its slots"
    return None


@dataclass(frozen=True)
class Relation:
    name: str
    description: str
    templates: tuple[Template, ...]
    seeds: tuple[tuple[str, ...], ...]
    constraints: Constraints
    reference: Reference | None
    source: Path | None = None

    @property
    def arity(self) -> int:
        # a relation without seeds (kgprobe.harvest.suggest) has its prompts' slots
        return len(self.seeds[0]) if self.seeds else self.templates[0].arity

    @property
    def prompts(self) -> list[str]:
        return [t.prompt for t in self.templates]


def relation_from_file(data: RelationFile, *, path: Path, root=None) -> Relation:
    """Semantic checks on a parsed relation file (arity, slots, duplicates, constraints): anything
    a harvest would trip over later is reported now, with the file's line."""
    if not data.name.strip():
        raise config_error("the name must not be blank", path, root, ("name",))
    arity = _check_seeds(data.seeds, path, root)
    for i, prompt in enumerate(data.prompts):
        problem = check_prompt(prompt, arity)
        if problem:
            raise config_error(problem, path, root, ("prompts", i))
    _check_constraints(data.constraints, arity, path, root)
    if data.reference is not None:
        for key in ("head", "tail"):
            if getattr(data.reference, key) >= arity:
                raise config_error(f"slot {getattr(data.reference, key)} out of range for {arity} slots",
                                   path, root, ("reference", key))
        if data.reference.head == data.reference.tail:
            raise config_error("head and tail must be different slots", path, root, ("reference", "tail"))
    return Relation(
        name=data.name, description=data.description,
        templates=tuple(Template.parse(p) for p in dict.fromkeys(data.prompts)),
        seeds=tuple(tuple(s.strip() for s in seed) for seed in data.seeds),
        constraints=data.constraints, reference=data.reference, source=path,
    )


def _check_seeds(seeds: list[list[str]], path: Path, root) -> int:
    """The arity the seeds agree on; a harvest weighs each prompt on the seeds, against corrupted
    seeds made from the *other* seeds, so it needs at least two."""
    if len(seeds) < 2:
        raise config_error(f"harvesting needs at least two seed tuples, the file gives {len(seeds)}",
                           path, root, ("seeds",))
    arity = len(seeds[0])
    if arity < 1:
        raise config_error("a seed needs at least one entity", path, root, ("seeds", 0))
    first: dict[tuple[str, ...], int] = {}
    for i, seed in enumerate(seeds):
        if len(seed) != arity:
            raise config_error(f"seed has {len(seed)} entities, the first seed has {arity}", path, root, ("seeds", i))
        for j, ent in enumerate(seed):
            if not ent.strip():
                raise config_error("empty entity in seed", path, root, ("seeds", i, j))
        key = tuple(e.strip() for e in seed)  # the seeds are used stripped
        if key in first:
            raise config_error(f"duplicate seed tuple (same as seeds[{first[key]}])", path, root, ("seeds", i))
        first[key] = i
    return arity


def _check_constraints(c: Constraints, arity: int, path: Path, root) -> None:
    where = ("constraints",)
    for slot, limit in c.max_per_slot.items():
        if not 0 <= slot < arity or limit < 1:
            raise config_error(f"max_per_slot: slot {slot} must be < {arity} with a limit >= 1",
                               path, root, where + ("max_per_slot", slot))
    for i, slot in enumerate(c.share_slots or []):
        if not 0 <= slot < arity:
            raise config_error(f"share_slots: slot {slot} out of range for {arity} slots",
                               path, root, where + ("share_slots", i))
    for slot, spec in c.types.items():
        problem = f"slot {slot} out of range for {arity} slots" if not 0 <= slot < arity else check_slot_type(spec)
        if problem is None and not all(name.strip() for name in (spec.type, *spec.against)):
            problem = "type names must not be blank"  # the LM is asked for the type's first token
        if problem:
            raise config_error(problem, path, root, where + ("types", slot))
    try:
        stopwords(c.stopwords)  # an unknown language fails here, not after the model has loaded
    except KgprobeError as err:
        raise config_error(str(err), path, root, where + ("stopwords",)) from None


def load_relation(path: str | Path) -> Relation:
    """Read and validate a relation file; problems are one ``KgprobeError`` with file:line."""
    path = Path(path)
    data, root = read_yaml(path)
    if not isinstance(data, dict):
        raise KgprobeError("a relation file must be a mapping with name, prompts and seeds", path=path, line=1)
    return relation_from_file(validate(RelationFile, data, path, root), path=path, root=root)


def relation_from_options(prompts: list[str] | tuple[str, ...], seeds: list[str] | tuple[str, ...], *,
                          name: str = "relation", description: str = "", min_seeds: int = 2) -> Relation:
    """A relation given on the command line (``--prompt`` and ``--seed "Paris|France"``, no file):
    each seed is its entities joined by ``|``. Problems are one ``KgprobeError`` naming the option.
    ``min_seeds=0`` (``--suggest-seeds``): the prompts alone, or with the few seeds given."""
    if not prompts:
        raise KgprobeError("--prompt: give at least one prompt with the slots <ENT0>, <ENT1>, ... "
                           "(e.g. --prompt \"<ENT0> is the capital of <ENT1> .\")")
    if len(seeds) < min_seeds:
        raise KgprobeError(f"--seed: harvesting needs at least two seed tuples (--seed \"Paris|France\"), got "
                           f"{len(seeds)}")
    if not name.strip():
        raise KgprobeError("--name: the relation's name must not be blank")
    tuples: list[tuple[str, ...]] = []
    for text in seeds:
        entities = tuple(part.strip() for part in text.split("|"))
        if tuples and len(entities) != len(tuples[0]):
            raise KgprobeError(f"--seed {text!r}: {len(entities)} entities, the first seed has {len(tuples[0])} "
                               "(entities are separated by |)")
        if not all(entities):
            raise KgprobeError(f"--seed {text!r}: an empty entity (entities are separated by |)")
        if entities in tuples:
            raise KgprobeError(f"--seed {text!r}: given twice")
        tuples.append(entities)
    slots = len({slot for prompt in prompts for slot in Template.parse(prompt).order})
    if tuples and len(tuples[0]) != slots and min_seeds < 2:  # (with two seeds or more, the prompt is said wrong)
        raise KgprobeError(f"--seed {seeds[0]!r}: {len(tuples[0])} entities, the prompts have {slots} slots "
                           "(entities are separated by |)")
    for prompt in prompts:
        problem = check_prompt(prompt, len(tuples[0]) if tuples else slots)
        if problem:
            raise KgprobeError(f"--prompt {prompt!r}: {problem}")
    return Relation(name=name.strip(), description=description, templates=tuple(
        Template.parse(p) for p in dict.fromkeys(prompts)), seeds=tuple(tuples), constraints=Constraints(),
        reference=None)


def relation_file(rel: Relation) -> dict:
    """``rel`` as the mapping of a relation file (:func:`load_relation` reads it back as ``rel``):
    what a run writes as ``relation.yaml``, so a relation given on the command line becomes a file."""
    data: dict = {"name": rel.name}
    if rel.description:
        data["description"] = rel.description
    data["prompts"] = rel.prompts
    data["seeds"] = [list(seed) for seed in rel.seeds]
    constraints = rel.constraints.model_dump(exclude_defaults=True)
    if constraints:
        data["constraints"] = constraints
    if rel.reference is not None:
        data["reference"] = rel.reference.model_dump(exclude_defaults=True)
    return data
