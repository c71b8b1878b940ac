"""Reverse dictionary on WordNet: embedding search alone vs. embedding search + LM re-ranking.

Queries are WordNet glosses (the definition part, before any ";"), the index holds every
synset's *label* only (``kgprobe embed --text label``; a gloss is never its own match), and the
target is the synset the gloss defines. For each query:

* ``embedding``: the rank of the target among all 117,659 synsets by cosine (all-MiniLM-L6-v2);
* ``lm_rerank``: the ``depth`` nearest synsets re-scored by :func:`kgprobe.index.rerank.lm_rerank`
  (SmolLM2-135M, best name's total log-prob minus ``a`` times its prior, plus ``c`` times the
  retrieval cosine), one row per ``a`` in ``--prior-weights`` and ``c`` in ``--cosine-weights``
  (all from one scoring pass); a target outside the ``depth`` counts as a miss (reciprocal
  rank 0), as in ``embedding_within_depth``.

Sampled synsets: those with a ``_hypernym`` edge out (nouns and verbs), seeded; with
``--common`` only those whose first name is one token of the LM's vocabulary. Also the README's
example query, "a domesticated carnivorous mammal", with the top 5 of each weighting and where
dog (02084071) lands. Writes ``eval/results/rerank.json``.

    python eval/bench_rerank.py             # 60 queries, depth 200: ~9 min on 2 CPU cores
    python eval/bench_rerank.py --common --out eval/results/rerank_common.json
    python eval/bench_rerank.py --queries 5 --depth 20 --out /tmp/rr.json     # a quick look
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.index.embed import embed_kg, encode_texts  # noqa: E402
from kgprobe.index.rerank import combine, score_names  # noqa: E402
from kgprobe.kg.datasets import build_dataset  # noqa: E402
from kgprobe.models.lm import CausalLMRunner  # noqa: E402
from kgprobe.models.loaders import load_causal_lm  # noqa: E402
from machine import machine_info  # noqa: E402

EXAMPLE = "a domesticated carnivorous mammal"
KS = (1, 5, 10)


def definition(gloss: str) -> str:
    """The definition part of a WordNet gloss: up to the first ';' and without quoted examples."""
    head = re.split(r';\s*"|;', gloss, maxsplit=1)[0]
    return head.strip().strip('"').strip()


def metrics(ranks: np.ndarray, depth: int | None = None, ks=KS) -> dict:
    """MRR (a rank beyond ``depth`` counts 0) and Hits@k of 1-based ranks."""
    ranks = np.asarray(ranks, dtype=float)
    recip = np.where(ranks <= (depth or np.inf), 1.0 / ranks, 0.0)
    out = {"mrr": round(float(recip.mean()), 4)}
    out.update({f"hits_at_{k}": round(float((ranks <= k).mean()), 4) for k in ks})
    return out


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--depth", type=int, default=200, help="candidates re-ranked per query (neighbors' default)")
    ap.add_argument("--prior-weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    ap.add_argument("--cosine-weights", type=float, nargs="+", default=[0.0, 4.0, 8.0, 16.0, 32.0],
                    help="weights of the retrieval cosine added to the LM score")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--common", action="store_true",
                    help="only synsets whose first name is one token of the LM's vocabulary (a common word)")
    ap.add_argument("--encoder", default="minilm-l6")
    ap.add_argument("--lm", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "rerank.json")
    return ap.parse_args()


def _targets(kg, labels: list[str], runner: CausalLMRunner, args: argparse.Namespace) -> list[tuple[int, str]]:
    """``(synset, definition)`` of ``args.queries`` random synsets with a hypernym and a definition
    of at least three words (with ``--common``: only those whose first name is one LM token)."""
    has_parent = np.unique(kg.triples[kg.triples[:, 1] == kg.relation_index("_hypernym")][:, 0])
    rng = np.random.default_rng(args.seed)
    targets = []
    for e in rng.permutation(has_parent):
        d = definition(kg.entity_descriptions[int(e)])
        first = labels[int(e)].split(", ")[0].replace("_", " ")
        if args.common and len(runner.encode(" " + first)) != 1:
            continue
        if len(d.split()) >= 3:
            targets.append((int(e), d))
        if len(targets) == args.queries:
            break
    return targets


def _example(kg, labels: list[str], runner: CausalLMRunner, scores: torch.Tensor, top: np.ndarray,
             top_scores: np.ndarray, weights: list[tuple[float, float]]) -> dict:
    """The top 5 and the rank of dog for :data:`EXAMPLE` (the last query), plain and re-ranked."""
    example_cand = top[-1]
    ex = score_names(EXAMPLE, [labels[c] for c in example_cand], runner=runner)
    example = {"query": EXAMPLE, "embedding_top5": [labels[c] for c in example_cand[:5]]}
    dog = kg.entity_index("02084071")
    example["embedding_rank_of_dog"] = int((scores[-1] > scores[-1, dog]).sum()) + 1
    for a, lam in weights:
        order = example_cand[combine(ex, a, retrieval=top_scores[-1], retrieval_weight=lam).order()]
        example[f"lm_rerank_top5_a{a:g}_c{lam:g}"] = [labels[c] for c in order[:5]]
        example[f"lm_rerank_rank_of_dog_a{a:g}_c{lam:g}"] = (
            int(np.flatnonzero(order == dog)[0]) + 1 if dog in order else None)
    return example


def main() -> None:
    args = _arguments()
    kg = build_dataset("wordnet")
    emb = embed_kg(kg, model=args.encoder, text="label", progress=True)
    vectors = torch.from_numpy(emb.vectors)
    labels = list(kg.entity_labels)
    model, tokenizer = load_causal_lm(args.lm, device="cpu")
    runner = CausalLMRunner(model, tokenizer, batch_size=64)
    targets = _targets(kg, labels, runner, args)
    queries = [d for _, d in targets] + [EXAMPLE]
    q = torch.from_numpy(encode_texts(queries, model=args.encoder, progress=False, cache=False))
    scores = q @ vectors.T  # (Q, E): 101 x 117,659 floats, small enough to keep whole
    top = torch.topk(scores, args.depth, dim=1).indices.numpy()

    weights = [(a, lam) for a in dict.fromkeys(args.prior_weights) for lam in dict.fromkeys(args.cosine_weights)]
    top_scores = torch.topk(scores, args.depth, dim=1).values.numpy()
    emb_ranks, lm_ranks, rows = [], {w: [] for w in weights}, []
    started = time.perf_counter()
    from tqdm import tqdm

    for i, (target, query) in enumerate(tqdm(targets, desc="re-ranking", unit="query")):
        full_rank = int((scores[i] > scores[i, target]).sum()) + 1
        cand = top[i]
        names = score_names(query, [labels[c] for c in cand], runner=runner)
        row = {"target": kg.entity_ids[target], "label": labels[target], "query": query, "embedding_rank": full_rank}
        for a, lam in weights:
            order = cand[combine(names, a, retrieval=top_scores[i], retrieval_weight=lam).order()]
            hit = np.flatnonzero(order == target)
            lm_ranks[a, lam].append(int(hit[0]) + 1 if len(hit) else np.inf)
            row[f"lm_rank_a{a:g}_c{lam:g}"] = None if not len(hit) else int(hit[0]) + 1
        emb_ranks.append(full_rank)
        rows.append(row)
    lm_seconds = time.perf_counter() - started
    example = _example(kg, labels, runner, scores, top, top_scores, weights)

    emb_ranks_a = np.array(emb_ranks, float)
    result = {
        "benchmark": "reverse dictionary on WordNet: gloss -> synset, label-only index",
        "machine": machine_info(),
        "config": {"queries": len(targets), "depth": args.depth, "seed": args.seed, "common_words_only": args.common,
                   "encoder": args.encoder,
                   "lm": args.lm, "entities": len(labels), "index_text": "label",
                   "prior_weights": list(dict.fromkeys(args.prior_weights)),
                   "cosine_weights": list(dict.fromkeys(args.cosine_weights))},
        "embedding": metrics(emb_ranks_a),
        "embedding_within_depth": metrics(emb_ranks_a, args.depth),
        "lm_rerank": {f"a={a:g},c={lam:g}": metrics(np.array(lm_ranks[a, lam], float), args.depth)
                      for a, lam in weights},
        "recall_at_depth": round(float((emb_ranks_a <= args.depth).mean()), 4),
        "lm_seconds_per_query": round(lm_seconds / max(len(targets), 1), 3),
        "example": example,
        "queries": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("embedding", "embedding_within_depth", "lm_rerank", "recall_at_depth",
                                            "lm_seconds_per_query", "example")}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
