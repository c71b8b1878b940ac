"""Answers of a trained run to ``(head, relation, ?)`` and ``(?, relation, tail)``, for a known entity
or for a new one encoded from its text (the queries behind ``kgprobe serve``'s entity page).

:class:`Predictor` loads a run once (:func:`~kgprobe.linkpred.run.load_trained`), encodes every
entity of its table once, and then answers any number of queries by scoring all entities with the
run's scorer (higher is better, as the evaluator ranks them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from kgprobe.errors import KgprobeError
from kgprobe.linkpred.run import TrainedRun, _vectors_for, load_trained


@dataclass
class Answer:
    """One predicted entity: its place, id, text and score."""

    rank: int
    id: str
    text: str
    score: float

    def as_json(self) -> dict:
        return {"rank": self.rank, "id": self.id, "text": self.text, "score": self.score}


@dataclass
class Predictor:
    """A trained run with every entity's vector, ready to answer link queries."""

    run: TrainedRun
    entities: torch.Tensor

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "cpu", batch_size: int = 256) -> "Predictor":
        run = load_trained(run_dir, device=device)
        with torch.no_grad():
            entities = run.model.all_entity_vectors(batch_size)
        return cls(run, entities)

    def text(self, row: int) -> str:
        """The entity text of a row of the run's table (its id when the run kept no texts)."""
        texts: list[Any] = self.run.record.get("texts") or self.entity_ids
        return str(texts[row])

    @property
    def entity_ids(self) -> list[str]:
        return self.run.record["entity_ids"]

    @property
    def relation_ids(self) -> list[str]:
        return self.run.record["relation_ids"]

    def position(self, entity_id: str) -> int | None:
        """The row of ``entity_id`` in the run's entity table, None when the run does not know it."""
        if not hasattr(self, "_positions"):
            self._positions = {e: i for i, e in enumerate(self.entity_ids)}
        return self._positions.get(entity_id)

    def vector(self, entity_id: str) -> torch.Tensor:
        row = self.position(entity_id)
        if row is None:
            raise KgprobeError(f"the run has no entity {entity_id!r}")
        return self.entities[row]

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """``(len(texts), dim)`` vectors of new entities from their texts (needs a text encoder)."""
        try:
            with torch.no_grad():
                return _vectors_for(self.run.model, list(texts), batch_size).to(self.entities.device)
        except (NotImplementedError, AttributeError) as err:
            raise KgprobeError(f"this run's encoder cannot encode new texts ({err})") from None

    def answers(self, vector: torch.Tensor, relation: str, *, k: int = 10, side: str = "tail",
                exclude: int | None = None, text: str | None = None) -> list[Answer]:
        """The ``k`` best entities ``e`` for ``(vector, relation, e)`` (``side="tail"``) or
        ``(e, relation, vector)`` (``side="head"``); ``exclude`` drops that entity row. A run whose
        scorer encodes queries from text (``query-encoder``) reads the anchor's ``text`` instead of
        ``vector``: the query vector is the encoder over ``"text [SEP] relation"``."""
        if relation not in self.relation_ids:
            raise KgprobeError(f"the run has no relation {relation!r}")
        model = self.run.model
        rel = model.relations.weight[self.relation_ids.index(relation)].detach().float()[None]
        query = vector.float().to(self.entities.device)[None]
        if model.encodes_queries:
            if text is None:
                raise KgprobeError("this run encodes its queries from text: give the entity's text")
            query = self.encode([model.scorer.query_text(text, self.relation_ids.index(relation),
                                                         head=side == "head")])
        with torch.no_grad():
            if side == "tail":
                scores = model.scorer.score_all_tails(query, rel, self.entities)[0]
            elif side == "head":
                scores = model.scorer.score_all_heads(rel, query, self.entities)[0]
            else:
                raise KgprobeError(f"side must be head or tail, not {side!r}")
        if exclude is not None:
            scores[exclude] = float("-inf")
        top = torch.topk(scores, min(k + (exclude is not None), len(scores)))
        rows = [(int(i), float(s)) for s, i in zip(top.values, top.indices) if s != float("-inf")][:k]
        return [Answer(n + 1, self.entity_ids[i], self.text(i), round(s, 6)) for n, (i, s) in enumerate(rows)]
