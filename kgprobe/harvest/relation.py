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
from kgprobe.harvest.entity_types import SlotType, check_slot_type
from kgprobe.yamlconf import config_error, read_yaml, validate

SLOT = re.compile(r"<ENT(\d+)>")


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_words: int = Field(default=3, ge=1)
    min_chars: int = Field(default=3, ge=1)
    stopwords: str = "english"
    capitalization: Literal["any", "title", "lower"] = "any"
    max_per_slot: dict[int, int] = Field(default_factory=dict)
    share_slots: list[int] | None = None
    types: dict[int, SlotType] = Field(default_factory=dict)


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kg: str
    relation: str
    head: int = Field(default=0, ge=0)
    tail: int = Field(default=1, ge=0)


class RelationFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    prompts: list[str] = Field(min_length=1)
    seeds: list[list[str]] = Field(min_length=1)
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
        return len(self.seeds[0])

    @property
    def prompts(self) -> list[str]:
        return [t.prompt for t in self.templates]


def relation_from_file(data: RelationFile, *, path: Path, root=None) -> Relation:
    """Semantic checks on a parsed relation file (arity, slots, duplicates)."""
    arity = len(data.seeds[0])
    if arity < 1:
        raise config_error("a seed needs at least one entity", path, root, ("seeds", 0))
    for i, seed in enumerate(data.seeds):
        if len(seed) != arity:
            raise config_error(f"seed has {len(seed)} entities, the first seed has {arity}", path, root, ("seeds", i))
        for j, ent in enumerate(seed):
            if not ent.strip():
                raise config_error("empty entity in seed", path, root, ("seeds", i, j))
    if len({tuple(s) for s in data.seeds}) != len(data.seeds):
        raise config_error("duplicate seed tuple", path, root, ("seeds",))
    for i, prompt in enumerate(data.prompts):
        problem = check_prompt(prompt, arity)
        if problem:
            raise config_error(problem, path, root, ("prompts", i))
    for slot, limit in data.constraints.max_per_slot.items():
        if slot >= arity or limit < 1:
            raise config_error(f"max_per_slot: slot {slot} must be < {arity} with a limit >= 1",
                               path, root, ("constraints", "max_per_slot"))
    for slot in data.constraints.share_slots or []:
        if slot >= arity:
            raise config_error(f"share_slots: slot {slot} out of range for {arity} slots",
                               path, root, ("constraints", "share_slots"))
    for slot, spec in data.constraints.types.items():
        problem = f"slot {slot} out of range for {arity} slots" if slot >= arity else check_slot_type(spec)
        if problem:
            raise config_error(problem, path, root, ("constraints", "types", slot))
    if data.reference is not None:
        for key in ("head", "tail"):
            if getattr(data.reference, key) >= arity:
                raise config_error(f"slot {getattr(data.reference, key)} out of range for {arity} slots",
                                   path, root, ("reference", key))
    return Relation(
        name=data.name, description=data.description,
        templates=tuple(Template.parse(p) for p in dict.fromkeys(data.prompts)),
        seeds=tuple(tuple(s.strip() for s in seed) for seed in data.seeds),
        constraints=data.constraints, reference=data.reference, source=path,
    )


def load_relation(path: str | Path) -> Relation:
    """Read and validate a relation file; problems are one ``KgprobeError`` with file:line."""
    path = Path(path)
    data, root = read_yaml(path)
    if not isinstance(data, dict):
        raise KgprobeError("a relation file must be a mapping with name, prompts and seeds", path=path, line=1)
    return relation_from_file(validate(RelationFile, data, path, root), path=path, root=root)
