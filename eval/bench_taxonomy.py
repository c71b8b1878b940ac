"""Reverse dictionary on WordNet: plain embedding search vs. taxonomy-aware search.

Queries are WordNet glosses (the definition part), the index holds every synset's label (a
gloss is never its own match), and the target is the synset the gloss defines, ranked among
all 117,659 synsets. Two query sets, each split into test (first) and validation (rest):

* ``random``: synsets with a ``_hypernym`` edge out and a definition of at least three words, in
  bench_rerank.py's seeded order (so the first 60 test queries are its 60);
* ``two_parents``: synsets with two or more ``_hypernym`` parents (1,453 in WordNet; dog is one:
  canine and domestic animal), the case a description naming several classes stands for.

The validation queries choose (m, tau, lambda) of :mod:`kgprobe.index.taxonomy` over a grid by
the mean of the two sets' MRR (and, for the record, by each set alone); the test queries
measure plain search, the chosen setting and the library's defaults (MRR, Hits@1/3/10). Also
the README's example, "a domesticated carnivorous mammal": top 5, and dog's (02084071) rank
under every setting of the grid.

Ranks here are counted from a dense score per query (fast over the grid); a sample of queries
is re-ranked through :func:`kgprobe.index.taxonomy.taxonomy_search` itself and must agree.

    python eval/bench_taxonomy.py          # about 6 min on 2 CPU cores (labels cached: seconds)
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_rerank import EXAMPLE, definition  # noqa: E402
from bench_rerank import metrics as rank_metrics  # noqa: E402
from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.index.embed import embed_kg, encode_texts  # noqa: E402
from kgprobe.index.taxonomy import FLOOR, OWN_WEIGHT, TOP, Taxonomy, named_classes, taxonomy_search  # noqa: E402
from kgprobe.kg.datasets import build_dataset  # noqa: E402
from machine import machine_info  # noqa: E402

DOG = "02084071"


def metrics(ranks: np.ndarray) -> dict:
    return {**rank_metrics(ranks, ks=(1, 3, 10)), "mean_rank": round(float(np.mean(ranks)), 1)}


class Ranker:
    """Target ranks of a block of queries under plain search and under taxonomy settings."""

    def __init__(self, q: torch.Tensor, vectors: torch.Tensor, taxonomy: Taxonomy, max_top: int):
        self.cos = q @ vectors.T  # (Q, E) for one block of queries
        top = torch.topk(self.cos, max_top, dim=1)
        self.top_rows, self.top_scores = top.indices.numpy(), top.values.numpy()
        self.taxonomy = taxonomy

    def plain(self, targets: np.ndarray) -> np.ndarray:
        t = self.cos[torch.arange(len(targets)), torch.as_tensor(targets)]
        return ((self.cos > t[:, None]).sum(1) + 1).numpy()

    def evidence(self, i: int, top: int, floor: float) -> tuple[np.ndarray, np.ndarray]:
        return self.taxonomy.members(*named_classes(self.top_rows[i], self.top_scores[i], top=top, floor=floor))

    def taxonomy_ranks(self, targets: np.ndarray, top: int, floor: float, own_weights) -> dict:
        ranks = {lam: [] for lam in own_weights}
        for i, t in enumerate(targets):
            rows, ev = self.evidence(i, top, floor)
            boost = torch.zeros(self.cos.shape[1])
            boost[torch.from_numpy(rows)] = torch.from_numpy(ev)
            for lam in own_weights:
                s = lam * self.cos[i] + boost
                ranks[lam].append(int((s > s[t]).sum()) + 1)
        return ranks


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=int, default=2000, help="random synsets' queries that choose the setting")
    ap.add_argument("--test", type=int, default=1000, help="random synsets' queries that measure it")
    ap.add_argument("--val-two", type=int, default=700, help="two-parent synsets' queries that choose the setting")
    ap.add_argument("--test-two", type=int, default=753, help="two-parent synsets' queries that measure it")
    ap.add_argument("--tops", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--floors", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6])
    ap.add_argument("--own-weights", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5, 1.0])
    ap.add_argument("--check", type=int, default=20, help="queries re-ranked through taxonomy_search to cross-check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default="minilm-l6")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "taxonomy.json")
    return ap.parse_args()


def _label(key) -> str:
    """A taxonomy setting ``(top, floor, own_weight)`` (or ``"plain"``) as the tables name it."""
    return "plain" if key == "plain" else f"m={key[0]},tau={key[1]:g},lambda={key[2]:g}"


def _setting(key) -> dict:
    return {"top": key[0], "floor": key[1], "own_weight": key[2]}


def _query_sets(kg, args: argparse.Namespace) -> dict:
    """``{set: {"test": (targets, queries), "val": ...}}``: the glosses (three words or more) of
    random synsets with a hypernym, and of synsets with two, as encoded queries."""
    triples = kg.triples.numpy()
    hyp = triples[triples[:, 1] == kg.relation_index("_hypernym")]
    parents, counts = np.unique(hyp[:, 0], return_counts=True)
    pools = {"random": parents, "two_parents": parents[counts >= 2]}
    sizes = {"random": (args.val, args.test), "two_parents": (args.val_two, args.test_two)}
    sets = {}
    for name, pool in pools.items():
        n_val, n_test = sizes[name]
        targets, queries = [], []
        for e in np.random.default_rng(args.seed).permutation(pool):
            d = definition(kg.entity_descriptions[int(e)])
            if len(d.split()) >= 3:
                targets.append(int(e))
                queries.append(d)
            if len(targets) == n_test + n_val:
                break
        q = torch.from_numpy(encode_texts(queries, model=args.encoder, progress=False, cache=True))
        n_test = min(n_test, len(targets) // 2)  # two_parents has 1,453 synsets in all
        sets[name] = {"test": (np.array(targets[:n_test]), q[:n_test]),
                      "val": (np.array(targets[n_test:]), q[n_test:])}
    return sets


def _ranks_of(sets: dict, split: str, keys: dict, vectors: torch.Tensor, taxonomy: Taxonomy, max_top: int) -> dict:
    """Per query set, the targets' ranks under plain search and under every setting in ``keys``
    (``{(top, floor): [own_weight, ...]}``), queries taken 250 at a time."""
    from tqdm import tqdm

    out = {}
    for name, parts in sets.items():
        targets, q = parts[split]
        got = {"plain": []}
        for lo in tqdm(range(0, len(targets), 250), desc=f"{name} {split}", unit="block", leave=False):
            block = Ranker(q[lo:lo + 250], vectors, taxonomy, max_top)
            got["plain"].extend(block.plain(targets[lo:lo + 250]))
            for (top, floor), lams in keys.items():
                for lam, r in block.taxonomy_ranks(targets[lo:lo + 250], top, floor, lams).items():
                    got.setdefault((top, floor, lam), []).extend(r)
        out[name] = got
    return out


def _mean_mrr(per_set: dict, key) -> float:
    """The MRR of setting ``key``, averaged over the query sets."""
    return float(np.mean([(1.0 / np.array(got[key], float)).mean() for got in per_set.values()]))


def _library_check(sets: dict, test: dict, defaults: tuple, vectors: torch.Tensor, emb, taxonomy: Taxonomy,
                   max_top: int, n_check: int) -> tuple[int, float]:
    """How many of the first ``n_check`` test queries :func:`taxonomy_search` itself ranks inside the
    tie range of the dense rank above, and its latency per query (ms) over 200 plain hits."""
    test_t, test_q = sets["random"]["test"]
    check = Ranker(test_q[:n_check], vectors, taxonomy, max_top)
    full = torch.argsort(check.cos, dim=1, descending=True, stable=True).numpy()
    top, floor, lam = defaults
    agree = 0
    for i, t in enumerate(test_t[:n_check]):
        rows, scores, _ = taxonomy_search(test_q[i].numpy(), hit_rows=full[i],
                                          hit_scores=check.cos[i, full[i]].numpy(), vectors=emb.vectors,
                                          taxonomy=taxonomy, top=top, floor=floor, own_weight=lam)
        at = int(np.flatnonzero(rows == t)[0])
        tied = np.flatnonzero(np.abs(scores - scores[at]) <= 1e-5)
        dense_rank = test["random"][defaults][i]
        agree += int(tied[0] + 1 <= dense_rank <= tied[-1] + 1)
    # latency of one query: taxonomy search over a plain search's 200 hits (CPU, numpy/scipy)
    hits = torch.topk(check.cos[0], 200)
    t1 = time.perf_counter()
    for _ in range(20):
        taxonomy_search(test_q[0].numpy(), hit_rows=hits.indices.numpy(), hit_scores=hits.values.numpy(),
                        vectors=emb.vectors, taxonomy=taxonomy, top=top, floor=floor, own_weight=lam)
    return agree, (time.perf_counter() - t1) / 20 * 1000


def _example(kg, labels: list[str], example_q: torch.Tensor, vectors: torch.Tensor, emb, taxonomy: Taxonomy,
             max_top: int, settings: dict, keys: list) -> dict:
    """The top 5 and the rank of dog for :data:`EXAMPLE`: plain, under the chosen and default
    settings, and the rank of dog under every setting of the grid."""
    ex = Ranker(example_q, vectors, taxonomy, max_top)
    dog = kg.entity_index(DOG)
    example = {"query": EXAMPLE, "plain_top5": [labels[r] for r in ex.top_rows[0, :5]],
               "plain_rank_of_dog": int(ex.plain(np.array([dog]))[0])}
    order = torch.argsort(ex.cos[0], descending=True, stable=True).numpy()
    for name, (top, floor, lam) in settings.items():
        rows = taxonomy_search(example_q[0].numpy(), hit_rows=order, hit_scores=ex.cos[0, order].numpy(),
                               vectors=emb.vectors, taxonomy=taxonomy, top=top, floor=floor, own_weight=lam).rows
        example[f"{name}_top5"] = [labels[r] for r in rows[:5]]
        example[f"{name}_rank_of_dog"] = int(np.flatnonzero(rows == dog)[0]) + 1
    example["rank_of_dog_by_setting"] = {}
    for top, floor, lam in keys:
        rows = taxonomy_search(example_q[0].numpy(), hit_rows=order, hit_scores=ex.cos[0, order].numpy(),
                               vectors=emb.vectors, taxonomy=taxonomy, top=top, floor=floor, own_weight=lam).rows
        example["rank_of_dog_by_setting"][_label((top, floor, lam))] = int(np.flatnonzero(rows == dog)[0]) + 1
    dog_ranks = example["rank_of_dog_by_setting"]
    example["settings_with_dog_in_top5"] = f"{sum(r <= 5 for r in dog_ranks.values())} of {len(dog_ranks)}"
    return example


def main() -> None:
    args = _arguments()
    started = time.perf_counter()
    kg = build_dataset("wordnet")
    emb = embed_kg(kg, model=args.encoder, text="label", progress=True)
    vectors = torch.from_numpy(emb.vectors)
    labels = list(kg.entity_labels)
    t0 = time.perf_counter()
    taxonomy = Taxonomy.from_kg(kg)
    taxonomy_seconds = time.perf_counter() - t0
    sets = _query_sets(kg, args)
    example_q = torch.from_numpy(encode_texts([EXAMPLE], model=args.encoder, progress=False, cache=False))
    max_top = max(args.tops + [TOP])

    grid = {(top, floor): list(args.own_weights) for top, floor in itertools.product(args.tops, args.floors)}
    val = _ranks_of(sets, "val", grid, vectors, taxonomy, max_top)
    keys = [key for key in val["random"] if key != "plain"]
    best = max(keys, key=lambda key: _mean_mrr(val, key))
    val_table = {_label(key): {"mean_mrr": round(_mean_mrr(val, key), 4),
                               **{name: metrics(got[key]) for name, got in val.items()}}
                 for key in sorted(["plain"] + keys, key=lambda key: -_mean_mrr(val, key))}
    settings = {"chosen": best, "defaults": (TOP, FLOOR, OWN_WEIGHT)}
    test = _ranks_of(sets, "test", {(t, f): [lam] for t, f, lam in settings.values()}, vectors, taxonomy, max_top)
    test_table = {name: {"plain": metrics(got["plain"]), **{s: metrics(got[key]) for s, key in settings.items()}}
                  for name, got in test.items()}
    first60 = {s: metrics(test["random"][key][:60]) for s, key in (("plain", "plain"), *settings.items())}
    # the library's own search gives each checked target a rank inside its tie range above
    agree, search_ms = _library_check(sets, test, settings["defaults"], vectors, emb, taxonomy, max_top, args.check)
    example = _example(kg, labels, example_q, vectors, emb, taxonomy, max_top, settings, keys)
    dog_ranks = example["rank_of_dog_by_setting"]
    per_set = {}
    for name, got in val.items():  # what each query set alone would have chosen
        key = max(keys, key=lambda key: (1.0 / np.array(got[key], float)).mean())
        per_set[name] = {"setting": _label(key), "val_mrr": metrics(got[key])["mrr"],
                         "rank_of_dog": dog_ranks[_label(key)]}

    result = {
        "benchmark": "reverse dictionary on WordNet: gloss -> synset among 117,659 labels; plain vs taxonomy-aware",
        "machine": machine_info(torch.device("cpu")),
        "config": {"encoder": args.encoder, "index_text": "label", "entities": len(labels), "seed": args.seed,
                   "queries": {name: {split: len(parts[split][0]) for split in ("val", "test")}
                               for name, parts in sets.items()},
                   "grid": {"tops": args.tops, "floors": args.floors, "own_weights": args.own_weights},
                   "taxonomy_relations": taxonomy.relations, "taxonomy_pairs": int(taxonomy.descendants.nnz),
                   "taxonomy_build_seconds": round(taxonomy_seconds, 2)},
        "chosen_on_validation": _setting(best),
        "chosen_by_each_set_alone": per_set,
        "library_defaults": _setting(settings["defaults"]),
        "test": test_table,
        "test_random_first_60 (bench_rerank's queries)": first60,
        "validation": val_table,
        "library_check": {"queries": args.check, "same_rank_as_taxonomy_search": agree},
        "taxonomy_search_ms_per_query (200 hits)": round(search_ms, 2),
        "example": example,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("chosen_on_validation", "chosen_by_each_set_alone", "library_defaults",
                                            "test",
                                            "test_random_first_60 (bench_rerank's queries)", "library_check",
                                            "taxonomy_search_ms_per_query (200 hits)", "example")},
                     indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
