"""Judge a harvest against a reference KG: precision@k and coverage after normalising surface forms.

A harvested tuple counts as correct when, slot by slot, one of its normalised forms equals one of
the reference entity's forms. Normalisation: Unicode accents removed, case folded, punctuation
dropped, a leading article ("the", "a", "an") dropped. An entity's forms are its label, the
parts of a label listing alternatives ("A / B", WordNet's "dog, domestic dog"), the label without
a trailing "City" or "D.C." ("Mexico City" ~ "Mexico", "Washington D.C." ~ "Washington"), and the
dataset's aliases where it
has them (country alternative spellings from countryinfo, capital spellings from GeoNames,
currencies' unit words and GeoNames' everyday names, "Rupee" for *Indian Rupee*, the everyday
names of UN subregions, "Southeast Asia" for *South-eastern Asia*; for
``geonames``, cities' alternative names and US state codes).
"""
from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

from kgprobe.atomic import write_json
from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

_ARTICLE = re.compile(r"^(the|a|an) ")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(r"[^\w\s]|_", " ", text)
    text = " ".join(text.split())
    return _ARTICLE.sub("", text)


def surface_forms(label: str, aliases: list[str] = ()) -> set[str]:
    forms = set()
    for name in [label, *label.split(" / "), *label.split(", "), *aliases]:
        n = normalise(name)
        if not n:
            continue
        forms.add(n)
        for suffix in (" city", " d c"):
            if n.endswith(suffix) and len(n) > len(suffix) + 2:
                forms.add(n[: -len(suffix)])
    return forms


def _dataset_aliases(name: str) -> dict[str, list[str]]:
    if name == "countries":
        from kgprobe.kg.datasets.countries import capital_aliases, country_aliases, currency_aliases, region_aliases

        return {**country_aliases(), **capital_aliases(), **currency_aliases(), **region_aliases()}
    if name == "geonames":
        from kgprobe.kg.datasets.geonames import aliases

        return aliases()
    return {}


def load_reference(spec: str) -> tuple[KnowledgeGraph, str, dict[str, list[str]]]:
    """``DATASET:RELATION`` or ``PATH:RELATION`` (a KG file or directory kgprobe reads)."""
    if ":" not in spec:
        raise KgprobeError(f"reference {spec!r}: expected DATASET:RELATION or KG_PATH:RELATION "
                           "(e.g. countries:capital)")
    source, relation = spec.rsplit(":", 1)
    from kgprobe.kg.datasets import DATASETS, build_dataset

    if source in DATASETS:
        kg, aliases = build_dataset(source), _dataset_aliases(source)
    else:
        from kgprobe.kg.formats import load_kg

        if not Path(source).exists():
            raise KgprobeError(f"reference {spec!r}: {source!r} is neither a dataset ({', '.join(DATASETS)}) "
                               "nor a path")
        kg, aliases = load_kg(source), {}
    if relation not in kg.relation_ids:
        raise KgprobeError(f"reference {spec!r}: no relation {relation!r} "
                           f"(relations: {', '.join(kg.relation_ids[:20])})")
    return kg, relation, aliases


def reference_pairs(kg: KnowledgeGraph, relation: str,
                    aliases: dict[str, list[str]]) -> list[tuple[set[str], set[str]]]:
    r = kg.relation_index(relation)
    rows = kg.triples[kg.triples[:, 1] == r].tolist()
    forms = lambda i: surface_forms(kg.entity_labels[i], aliases.get(kg.entity_ids[i], []))  # noqa: E731
    return [(forms(h), forms(t)) for h, _, t in rows]


def _judged_at(hits: list[bool], judged: list[bool], k: int) -> float | None:
    picked = [h for h, j in zip(hits, judged) if j][:k]
    return sum(picked) / k if len(picked) >= k else None


def evaluate_run(
    run_dir: str | Path,
    reference: str,
    *,
    head_slot: int = 0,
    tail_slot: int = 1,
    ks: tuple[int, ...] = (10, 50, 100),
) -> dict:
    """Precision@k of the ranked tuples and coverage of the reference relation; writes eval.json."""
    run_dir = Path(run_dir)
    path = run_dir / "tuples.jsonl"
    if not path.is_file():
        raise KgprobeError(f"{run_dir} has no tuples.jsonl (is it a finished harvest run?)")
    tuples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            tuples.append(json.loads(line)["entities"])
        except (ValueError, KeyError, TypeError):
            raise KgprobeError("not a harvest tuple line", path=path, line=n) from None
    judged = judge(tuples, ReferenceIndex.load(reference), head_slot=head_slot, tail_slot=tail_slot, ks=ks)
    result = {"run": str(run_dir), "reference": reference, "head_slot": head_slot, "tail_slot": tail_slot, **judged}
    write_json(run_dir / "eval.json", result)
    return result


class ReferenceIndex:
    """A reference relation's (head form, tail form) pairs, for judging many tuple lists."""

    def __init__(self, pairs: list[tuple[set[str], set[str]]]):
        self.size = len(pairs)
        self.index: dict[tuple[str, str], int] = {}
        for i, (hs, ts) in enumerate(pairs):
            for h in hs:
                for t in ts:
                    self.index.setdefault((h, t), i)
        self.heads = {h for hs, _ in pairs for h in hs}

    @classmethod
    def load(cls, reference: str) -> "ReferenceIndex":
        """From ``DATASET:RELATION`` or ``KG_PATH:RELATION`` (:func:`load_reference`)."""
        return cls(reference_pairs(*load_reference(reference)))


def tuple_hits(tuples: list, ref: ReferenceIndex, *, head_slot: int = 0, tail_slot: int = 1) -> list[bool]:
    """Per tuple, whether the reference holds it (as :func:`judge` counts a hit)."""
    return [len(ents) > max(head_slot, tail_slot)
            and (normalise(ents[head_slot]), normalise(ents[tail_slot])) in ref.index for ents in tuples]


def judge(tuples: list, ref: ReferenceIndex, *, head_slot: int = 0, tail_slot: int = 1,
          ks: tuple[int, ...] = (10, 50, 100)) -> dict:
    """Precision@k (None below k tuples), precision over all, coverage of the reference, and the
    same on the tuples whose head the reference knows (judged)."""
    hits, found, judged = [], set(), []
    for ents in tuples:
        if max(head_slot, tail_slot) >= len(ents):
            raise KgprobeError(f"slot {max(head_slot, tail_slot)} out of range for {len(ents)}-ary tuples")
        match = ref.index.get((normalise(ents[head_slot]), normalise(ents[tail_slot])))
        hits.append(match is not None)
        judged.append(normalise(ents[head_slot]) in ref.heads)
        if match is not None:
            found.add(match)
    return {
        "tuples": len(tuples), "reference_pairs": ref.size,
        **{f"precision@{k}": (sum(hits[:k]) / k if len(tuples) >= k else None) for k in ks},
        "precision_all": sum(hits) / len(hits) if hits else None,
        "correct": sum(hits),
        "coverage": len(found) / ref.size if ref.size else None,
        # only tuples whose head the reference knows (e.g. a country, not a US state)
        "judged_tuples": sum(judged),
        **{f"judged_precision@{k}": _judged_at(hits, judged, k) for k in ks},
        "wrong_in_top_50": [list(ents) for ents, hit in zip(tuples[:50], hits[:50]) if not hit],
    }
