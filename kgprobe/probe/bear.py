"""A fact set as a BEAR / lm-pub-quiz dataset, so lm-pub-quiz can score what kgprobe scored.

lm-pub-quiz (``lm_pub_quiz.Dataset.from_path``) reads a directory with

* ``metadata_relations.json``: per relation code ``templates`` (a list; here the one kgprobe
  template, ``[X]`` = subject, ``[Y]`` = object), ``answer_space_labels`` and ``answer_space_ids``
  (parallel lists), and further keys it keeps as relation info (here ``kgprobe_relation``, the
  relation's id, and ``fact_set``);
* ``<code>.jsonl``: one instance per line, ``sub_id``, ``sub_label``, ``obj_id``, ``obj_label``
  and ``answer_idx``, the object's position in the answer space. lm-pub-quiz would join ``obj_id``
  on the answer space's ids to find it, but pandas reads ids that look like numbers (WordNet's
  ``02084071``) as numbers, and the join then finds nothing; with ``answer_idx`` given it is not
  needed. (A subject label such as ``007`` still comes back as ``7``: pandas again.)

lm-pub-quiz ranks every instance's true object against the *whole* answer space of its relation.
The answer space written here is the union of the relation's facts' options (the true object and
its alternatives), so for a ``k="all"`` fact set (:mod:`kgprobe.probe.fact_sets`) it is exactly
the options kgprobe ranked, where each fact's subject has one true object in it (a functional
relation). Options that read the same (case-insensitively) are one answer, with the smallest of
their ids; answers are in id order. The relation code is the relation id with anything but
letters, digits, ``_`` and ``-`` written ``_`` (it names a file, and lm-pub-quiz cuts codes at
the first ``.``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from kgprobe.errors import KgprobeError
from kgprobe.probe.fact_sets import Fact, FactSet

METADATA_FILE = "metadata_relations.json"


def relation_code(relation: str) -> str:
    """The file-safe code lm-pub-quiz knows ``relation`` by."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", relation).strip("_") or "relation"


def answer_space(facts: list[Fact]) -> dict[str, tuple[str, str]]:
    """Case-folded label -> (id, label) over every option of ``facts``, one entry per label (its
    smallest id), in id order."""
    space: dict[str, tuple[str, str]] = {}
    for f in facts:
        for oid, label in zip((f.answer_id, *f.alternative_ids), f.options):
            key = label.casefold()
            if key not in space or oid < space[key][0]:
                space[key] = (oid, label)
    return dict(sorted(space.items(), key=lambda item: item[1][0]))


def export_bear(fact_set: FactSet, directory: str | Path) -> Path:
    """Write ``fact_set`` in lm-pub-quiz's dataset format into ``directory`` (made if missing; its
    metadata file and the relations' files are replaced); return the directory."""
    directory = Path(directory)
    by_relation: dict[str, list[Fact]] = {}
    for f in fact_set.facts:
        by_relation.setdefault(f.relation, []).append(f)
    codes: dict[str, str] = {}
    for relation in by_relation:
        code = relation_code(relation)
        if code in codes:
            raise KgprobeError(f"relations {codes[code]!r} and {relation!r} would both be lm-pub-quiz's {code!r}")
        codes[code] = relation
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {}
    for code, relation in codes.items():
        facts = by_relation[relation]
        space = answer_space(facts)
        metadata[code] = {"templates": [fact_set.templates[relation]],
                          "answer_space_labels": [label for _, label in space.values()],
                          "answer_space_ids": [oid for oid, _ in space.values()],
                          "kgprobe_relation": relation, "fact_set": fact_set.name}
        position = {key: i for i, key in enumerate(space)}
        rows = [{"sub_id": f.subject_id, "sub_label": f.subject, "obj_id": space[f.answer.casefold()][0],
                 "obj_label": space[f.answer.casefold()][1], "answer_idx": position[f.answer.casefold()]}
                for f in facts]
        (directory / f"{code}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n",
                                           encoding="utf-8")
    return directory
