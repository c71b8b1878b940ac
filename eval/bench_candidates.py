"""How a trained link-prediction run's test MRR depends on the number of candidates ranked.

BLP's WN18RR-inductive figures rank each test triple's missing entity among WN18RR's 40,943
entities; kgprobe's WordNet split ranks it among all 117,659 synsets. This script scores one
trained run's test split (filtered, realistic ranks, head and tail) against:

* ``all``: every entity (what ``kgprobe linkpred train`` reports);
* ``in_triples``: the entities of some triple (drops synsets with none of the 11 relations);
* ``size_N``: ``N`` entities (default 40,943), every test triple's two entities plus a seeded
  random draw of the others, once per ``--seeds`` seed, and their mean.

A smaller candidate set can only lower (improve) each rank, so the ``size_N`` rows bound what the
same model scores on a KG of that size; they are not the acceptance figure.

    python eval/bench_candidates.py runs/linkpred_wordnet/blp_transe --data runs/linkpred_wordnet/wordnet_split
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.linkpred.evaluator import Ranks, SideRanks, evaluate_model, rank_metrics  # noqa: E402
from kgprobe.linkpred.run import load_for_evaluation  # noqa: E402
from kgprobe.linkpred.samplers import SYMMETRIC_SHARE, mutual_share  # noqa: E402
from machine import machine_info  # noqa: E402

KEYS = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")
WN18RR_ENTITIES = 40_943


def candidate_sets(test: torch.Tensor, known: torch.Tensor, num_entities: int, sizes, seeds) -> dict:
    """Named candidate sets (sorted entity ids; ``None`` = all entities)."""
    sets = {"all": None, "in_triples": torch.unique(torch.cat([known[:, 0], known[:, 2]]))}
    needed = torch.unique(torch.cat([test[:, 0], test[:, 2]]))
    others = torch.ones(num_entities, dtype=torch.bool)
    others[needed] = False
    others = torch.nonzero(others).flatten()
    for size in sizes:
        if size < len(needed):
            raise SystemExit(f"--sizes {size} is fewer than the {len(needed)} entities of the test triples")
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            extra = others[torch.randperm(len(others), generator=g)[:size - len(needed)]]
            sets[f"size_{size}_seed{seed}"] = torch.sort(torch.cat([needed, extra])).values
    return sets


def per_relation(ranks: Ranks, test: torch.Tensor, train: torch.Tensor, relation_ids) -> dict:
    """Test metrics of each relation's triples (head and tail queries pooled, realistic ranks), with
    the relation's mutual share in the training triples (1 = symmetric; see
    ``kgprobe.linkpred.samplers.mutual_share``). The ranks are those of the all-candidates run."""
    share = mutual_share(train, len(relation_ids))
    out = {}
    for r in torch.unique(test[:, 1]).tolist():
        keep = test[:, 1] == r
        part = Ranks(*(None if p is None else SideRanks(p.greater[keep], p.equal[keep], p.num_options[keep])
                       for p in (ranks.head, ranks.tail)))
        m = rank_metrics(part)
        out[relation_ids[r]] = {"test_triples": int(keep.sum()), "mutual_share": round(float(share[r]), 3),
                                "symmetric": bool(share[r] >= SYMMETRIC_SHARE),
                                **{k: round(float(m[f"both.realistic.{k}"]), 5) for k in KEYS}}
    return out


def query_entity_first(entities: torch.Tensor, relations: torch.Tensor, scorer, test: torch.Tensor,
                       known: torch.Tensor) -> dict:
    """How often the query's own entity beats the answer: ``s(h, r, h) > s(h, r, t)`` for tail
    queries and ``s(t, r, t) > s(h, r, t)`` for head queries (each such query loses one rank), and
    how often it is the top candidate outright (Hits@1 of ``(h, r, h)`` / ``(t, r, t)`` ranked
    like a test triple, known answers filtered). In-batch negatives never offer the entity itself
    (see ``self_negatives`` in kgprobe.linkpred.samplers)."""
    h, r, t = entities[test[:, 0], None], relations[test[:, 1], None], entities[test[:, 2], None]
    answer = scorer.score(h, r, t)
    out = {"tail_queries_head_above_answer": round(float((scorer.score(h, r, h) > answer).float().mean()), 5),
           "head_queries_tail_above_answer": round(float((scorer.score(t, r, t) > answer).float().mean()), 5)}
    loops = {"tail": test[:, [0, 1, 0]], "head": test[:, [2, 1, 2]]}
    for side, name in (("tail", "tail_queries_head_first"), ("head", "head_queries_tail_first")):
        m = evaluate_model(entities, relations, scorer, loops[side], filter_triples=known, sides=(side,))
        out[name] = round(float(m[f"{side}.realistic.hits_at_1"]), 5)
    return out


def scaling(run_dir: Path, data: Path, *, sizes=(WN18RR_ENTITIES,), seeds=(0, 1, 2), device: str = "auto",
            batch_size: int = 256) -> dict:
    t0 = time.perf_counter()
    run, split, entities = load_for_evaluation(run_dir, data, device=device, batch_size=batch_size)
    load_seconds = time.perf_counter() - t0
    dev = entities.device
    relations = run.model.relations.weight.detach().float()
    test, known = split.triples["test"], split.all_triples
    rows, relations_table = {}, None
    for name, cand in candidate_sets(test, known, split.graph.num_entities, sizes, seeds).items():
        t1 = time.perf_counter()
        m, ranks = evaluate_model(entities, relations, run.model.scorer, test.to(dev), filter_triples=known.to(dev),
                                  candidates=None if cand is None else cand.to(dev), return_ranks=True)
        if cand is None:
            relations_table = per_relation(ranks, test, split.triples["train"], split.graph.relation_ids)
        rows[name] = {"candidates": split.graph.num_entities if cand is None else len(cand),
                      **{k: round(float(m[f"both.realistic.{k}"]), 5) for k in KEYS},
                      "seconds": round(time.perf_counter() - t1, 2)}
    for size in sizes:
        picked = [rows[f"size_{size}_seed{s}"] for s in seeds]
        rows[f"size_{size}_mean"] = {"candidates": size, "seeds": list(seeds),
                                     **{k: round(sum(r[k] for r in picked) / len(picked), 5) for k in KEYS}}
    t1 = time.perf_counter()
    with torch.no_grad():
        self_rank = query_entity_first(entities, relations, run.model.scorer, test.to(dev), known.to(dev))
    self_rank["seconds"] = round(time.perf_counter() - t1, 2)
    return {"run": str(run_dir), "data": str(data), "config": run.config, "test_triples": len(test),
            "load_and_encode_seconds": round(load_seconds, 2), "device": str(dev), "candidates": rows,
            "per_relation_all_candidates": relations_table, "query_entity_itself": self_rank}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a run directory of `kgprobe linkpred train` (best.pt, run.json)")
    ap.add_argument("--data", type=Path, required=True, help="the split directory it was trained on")
    ap.add_argument("--sizes", type=int, nargs="+", default=[WN18RR_ENTITIES])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default: RUN_DIR/candidates.json)")
    args = ap.parse_args()
    result = {"benchmark": "test MRR against candidate sets of different sizes",
              "machine": machine_info(), **scaling(args.run_dir, args.data, sizes=args.sizes, seeds=args.seeds,
                                                   device=args.device)}
    out = args.out or args.run_dir / "candidates.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(json.dumps(result["candidates"], indent=2))


if __name__ == "__main__":
    main()
