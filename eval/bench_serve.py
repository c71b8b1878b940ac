"""`kgprobe serve` under load, and SPARQL in pyoxigraph (the store) against rdflib (in memory).

1. **Store**: builds the dataset (WordNet 3.0 by default: 117,659 synsets, 218,358 triples) as a
   `kgprobe data build` run, loads it into a fresh store (:func:`kgprobe.kg.store.open_store`, the
   API behind `kgprobe kg load`) and records the load time and the store's size on disk.
2. **Load test**: starts `kgprobe serve RUNS --store STORE --port 0 --query-timeout 120` in a
   subprocess (127.0.0.1),
   warms every route once (the first entity page loads the KG), then sends ``--requests`` requests,
   ``--concurrency`` at a time (asyncio + httpx2), spread evenly over five route groups: the runs
   page, a harvest page sorted, filtered and paged, entity pages (a seeded sample of entities),
   the ``/api`` JSON routes and ``/sparql`` with the query set below. Per group: p50 / p95 / p99
   latency, requests per second and errors (any status but 200).
3. **Engines**: the query set (counts, a hypernym chain by property path, the subtree under a
   node, label lookups, facts of an entity, a FILTER regex with LIMIT, ...) run by pyoxigraph on
   the store directory (in this process: the engine alone) and by rdflib on an in-memory Graph
   parsed from the same KG's Turtle (:func:`kgprobe.kg.formats.rdf.rdf_lines`, with the named
   graph's statement IRIs, so both hold the same triples); per query the seconds of each
   (the best of up to 3 runs), their ratio, and whether both give the same rows. Also the time of
   the store API's ``query`` (a child process per query, as the server runs it).

The harvest page is a copy of a real SmolLM2 harvest (``--harvest-run``; default
eval/results/relations_runs/capital_of, made by eval/bench_relations.py) or, with
``--harvest-run none`` or where it is missing, a synthetic harvest of the dataset's first relation.

    python eval/bench_serve.py                       # WordNet, 2,000 requests at 16: ~9 min on 2 cores
    python eval/bench_serve.py --dataset nations --requests 40 --concurrency 4 --out /tmp/s.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.kg.build import build_and_save  # noqa: E402
from kgprobe.kg.formats.rdf import DEFAULT_BASE, rdf_lines  # noqa: E402
from kgprobe.kg.store import open_store  # noqa: E402
from kgprobe.outdir import write_marker  # noqa: E402
from machine import machine_info  # noqa: E402

GROUPS = ("runs", "harvest", "entity", "api", "sparql")
HARVEST = "harvest"  # the harvest run's path under RUNS
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
KGP = DEFAULT_BASE + "schema#"
DESCRIPTION = "http://purl.org/dc/terms/description"
#: WordNet's dog (dog, domestic dog, Canis familiaris): the example entity of the WordNet queries
WORDNET_DOG = "02084071"


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="wordnet", help="a dataset of `kgprobe data list` (nations: a quick look)")
    ap.add_argument("--harvest-run", default=str(ROOT / "eval" / "results" / "relations_runs" / "capital_of"),
                    help="a harvest run directory to copy as the harvest page, or 'none' (a synthetic one)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--entities", type=int, default=50, help="entities sampled for the entity pages")
    ap.add_argument("--query-timeout", type=float, default=120.0,
                    help="the server's --query-timeout (its default, 30 s, is hit when 16 clients pile heavy "
                         "queries onto 2 cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="where RUNS and STORE go (default: a temporary folder)")
    ap.add_argument("--no-rdflib", action="store_true", help="skip the rdflib comparison")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "serve.json")
    return ap.parse_args()


# ----------------------------------------------------------------------------- runs and store
def prepare_runs(runs: Path, dataset: str, harvest_run: str) -> tuple:
    """RUNS with the dataset as a `kgprobe data build` run and a harvest run; (kg, facts, seconds)."""
    start = time.perf_counter()
    kg, _ = build_and_save(dataset, runs / dataset, progress=False)
    build_s = time.perf_counter() - start
    source = Path(harvest_run) if harvest_run.lower() != "none" else None
    if source is not None and (source / "tuples.jsonl").is_file():
        shutil.copytree(source, runs / HARVEST)
        harvest = {"source": str(source.relative_to(ROOT) if source.is_relative_to(ROOT) else source)}
    else:
        harvest = {"source": f"synthetic: the first 500 triples of {dataset}'s first relation"}
        synthetic_harvest(kg, runs / HARVEST)
    harvest["tuples"] = sum(1 for _ in open(runs / HARVEST / "tuples.jsonl", encoding="utf-8"))
    return kg, harvest, build_s


def synthetic_harvest(kg, out: Path, n: int = 500) -> None:
    """A harvest run's files (tuples.jsonl, prompts.json, run.json) over triples of the KG's first relation."""
    out.mkdir(parents=True)
    write_marker(out, "harvest")
    labels, relation = kg.entity_labels, kg.relation_ids[0]
    pairs = [(labels[h], labels[t]) for h, r, t in kg.triples.tolist() if r == 0][:n]
    prompt = "<ENT0> is related to <ENT1> ."
    rows = [{"rank": i + 1, "entities": list(p), "score": round(-0.01 * i, 6), "prompt_scores": {prompt: -0.01 * i}}
            for i, p in enumerate(pairs)]
    (out / "tuples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / "prompts.json").write_text(json.dumps({"relation": relation, "prompts": [
        {"prompt": prompt, "weight": 1.0, "pos": -1.0, "neg": -5.0}]}))
    (out / "run.json").write_text(json.dumps({"relation": relation, "model": "synthetic", "tuples": len(rows)}))


def load_store(kg, store_dir: Path) -> dict:
    """Load ``kg`` into a new store at ``store_dir``; the load's figures and the size on disk."""
    start = time.perf_counter()
    with open_store(store_dir, create=True, read_only=False) as store:
        report = store.load(kg)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in store_dir.rglob("*") if p.is_file())
    return {"graph": report.graph, "rdf_triples": report.triples, "load_s": round(seconds, 2),
            "store_bytes": size, "store_mib": round(size / 2**20, 1),
            "rdf_triples_per_s": round(report.triples / seconds)}


# ----------------------------------------------------------------------------- the query set
def chain_entity(kg, relation: int = 0) -> int:
    """WordNet's dog, else the entity with the longest path along ``relation`` (its first-found)."""
    ids = list(kg.entity_ids)
    if WORDNET_DOG in ids:
        return ids.index(WORDNET_DOG)
    up: dict[int, list[int]] = {}
    for h, r, t in kg.triples.tolist():
        if r == relation:
            up.setdefault(h, []).append(t)
    depth: dict[int, int] = {}

    def walk(node: int, seen: frozenset) -> int:
        if node not in depth:
            depth[node] = 1 + max((walk(t, seen | {node}) for t in up.get(node, []) if t not in seen), default=0)
        return depth[node]

    return max(sorted(up), key=lambda h: walk(h, frozenset()))


def query_set(kg) -> list[dict]:
    """About ten realistic queries over the loaded KG, around one entity and the first relation."""
    e = chain_entity(kg)
    ent = f"<{DEFAULT_BASE}entity/{quote(kg.entity_ids[e], safe='')}>"
    rel = f"<{DEFAULT_BASE}relation/{quote(kg.relation_ids[0], safe='')}>"
    label = kg.entity_labels[e]
    word = "".join(ch for ch in label.split(",")[0] if ch.isalnum())[:4] or "a"
    mid = chain_mid(kg, e)
    lab = f"<{RDFS}label>"
    q = [
        ("count_triples", "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"),
        ("count_entities", f"SELECT (COUNT(?e) AS ?n) WHERE {{ ?e a <{KGP}Entity> }}"),
        ("triples_per_relation", f"SELECT ?l (COUNT(*) AS ?n) WHERE {{ ?r a <{KGP}Relation> ; {lab} ?l . ?s ?r ?o }}"
                                 " GROUP BY ?l ORDER BY DESC(?n) ?l"),
        ("label_lookup", f"SELECT ?e WHERE {{ ?e {lab} {json.dumps(label)} }}"),
        ("label_and_gloss", f"SELECT ?l ?d WHERE {{ {ent} {lab} ?l OPTIONAL {{ {ent} <{DESCRIPTION}> ?d }} }}"),
        ("chain_path", f"SELECT ?a ?l WHERE {{ {ent} {rel}+ ?a . ?a {lab} ?l }} ORDER BY ?l"),
        ("subtree_count", f"SELECT (COUNT(DISTINCT ?x) AS ?n) WHERE {{ ?x {rel}+ <{mid}> }}"),
        ("facts_out", f"SELECT ?rl ?ol WHERE {{ {ent} ?r ?o . ?r {lab} ?rl . ?o {lab} ?ol }} ORDER BY ?rl ?ol"),
        ("statements_of", f"SELECT ?t ?i WHERE {{ ?t <{RDF}subject> {ent} ; <{KGP}index> ?i }} ORDER BY ?i"),
        ("regex_limit", f"SELECT ?e ?l WHERE {{ ?e a <{KGP}Entity> ; {lab} ?l "
                        f"FILTER regex(?l, {json.dumps('^' + word)}, \"i\") }} ORDER BY ?l ?e LIMIT 20"),
    ]
    return [{"name": name, "query": text} for name, text in q]


def chain_mid(kg, e: int, steps: int = 3) -> str:
    """The IRI of the node ``steps`` up the first relation from entity ``e`` (or as far as it goes)."""
    up = {}
    for h, r, t in kg.triples.tolist():
        if r == 0 and h not in up:
            up[h] = t
    node = e
    for _ in range(steps):
        if node not in up:
            break
        node = up[node]
    return f"{DEFAULT_BASE}entity/{quote(kg.entity_ids[node], safe='')}"


# ----------------------------------------------------------------------------- the server and the load test
def start_server(runs: Path, store: Path, *options: str, timeout_s: float = 180) -> tuple[subprocess.Popen, str]:
    """`kgprobe serve RUNS --store STORE --port 0 OPTIONS`; the process and the address it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "kgprobe", "serve", str(runs), "--store", str(store), "--port", "0",
                             *options],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    from kgprobe.serve.announce import announced_url

    try:
        return proc, announced_url(proc, timeout_s=timeout_s)
    except Exception:
        proc.kill()
        raise


def request_plan(kg, dataset: str, harvest_rows: list[dict], queries: list[dict], *, n: int, entities: int,
                 seed: int) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """The URLs of each route group, and ``n`` requests (group, URL) spread evenly over the groups."""
    rng = random.Random(seed)
    sample = rng.sample(range(kg.num_entities), min(entities, kg.num_entities))
    ent = [f"/entity/{dataset}/{quote(kg.entity_ids[i], safe='')}" for i in sample]
    word = next((e for r in harvest_rows for e in r["entities"] if len(e) >= 3), "a")[:2]
    h, page = f"/harvest/{HARVEST}", 2 if len(harvest_rows) > 50 else 1
    urls = {
        "runs": ["/"],
        "harvest": [h, f"{h}?sort=score&order=asc", f"{h}?{urlencode({'q': word})}",
                    f"{h}?sort=e0&size=50&page={page}"],
        "entity": ent,
        "api": ["/api/runs", f"/api/harvest/{HARVEST}?sort=score&size=50", f"/api/run/{dataset}?q={word}"]
               + ["/api" + u for u in ent[:10]],
        "sparql": ["/sparql?" + urlencode({"query": q["query"]}) for q in queries],
    }
    plan = [(g, urls[g][(i // len(GROUPS)) % len(urls[g])]) for i, g in
            ((i, GROUPS[i % len(GROUPS)]) for i in range(n))]
    rng.shuffle(plan)
    return urls, plan


async def _fetch_all(base: str, plan: list[tuple[str, str]], concurrency: int) -> list[tuple[str, int, float]]:
    import httpx2

    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    results: list[tuple[str, int, float]] = []
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=120.0) as client:
        async def worker():
            while not queue.empty():
                group, url = queue.get_nowait()
                start = time.perf_counter()
                try:
                    status = (await client.get(url, headers={"accept": "*/*"})).status_code
                except httpx2.HTTPError:
                    status = -1
                results.append((group, status, time.perf_counter() - start))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def load_test(base: str, urls: dict[str, list[str]], plan: list[tuple[str, str]], concurrency: int) -> dict:
    """Warm every URL once (timed), then run the plan; the figures per route group and in all."""
    start = time.perf_counter()
    warm = asyncio.run(_fetch_all(base, [(g, u) for g in GROUPS for u in urls[g]], 1))
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    results = asyncio.run(_fetch_all(base, plan, concurrency))
    wall = time.perf_counter() - start
    groups = {g: summarize([r for r in results if r[0] == g], wall) for g in GROUPS}
    return {"requests": len(results), "concurrency": concurrency, "wall_s": round(wall, 2),
            "requests_per_s": round(len(results) / wall, 1), "errors": sum(1 for r in results if r[1] != 200),
            "all": summarize(results, wall), "groups": groups,
            "warmup": {"requests": len(warm), "seconds": round(warm_s, 2),
                       "errors": sum(1 for r in warm if r[1] != 200),
                       "slowest_s": round(max(r[2] for r in warm), 3)},
            "urls": urls}


def summarize(results: list[tuple[str, int, float]], wall: float) -> dict:
    if not results:
        return {"requests": 0}
    ms = np.array([r[2] for r in results]) * 1000
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r[1])] = statuses.get(str(r[1]), 0) + 1
    return {"requests": len(results), "errors": sum(1 for r in results if r[1] != 200), "statuses": statuses,
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1),
            "mean_ms": round(float(ms.mean()), 1), "requests_per_s": round(len(results) / wall, 1)}


# ----------------------------------------------------------------------------- pyoxigraph against rdflib
def _best(fn, repeat: int = 3, budget_s: float = 2.0):
    """``(best seconds, result)`` over up to ``repeat`` runs (fewer once ``budget_s`` is spent)."""
    times, result, spent = [], None, 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if spent > budget_s:
            break
    return min(times), result


def _text(term) -> str:
    """The lexical value of an rdflib or a pyoxigraph term ('' for unbound)."""
    if term is None:
        return ""
    return str(term) if hasattr(term, "n3") else term.value  # rdflib's .value is a Python value


def _rows(solutions) -> list[tuple[str, ...]]:
    """Rows of an rdflib or pyoxigraph SELECT result as tuples of lexical values."""
    return [tuple(_text(v) for v in row) for row in solutions]


def compare_engines(kg, store_dir: Path, graph: str, queries: list[dict]) -> dict:
    """Each query in pyoxigraph (the store, in process), in the store API (a child process) and in rdflib."""
    import pyoxigraph
    from rdflib import Graph

    start = time.perf_counter()
    turtle = "".join(rdf_lines(kg, format="turtle", graph=graph))  # the store's graph node and statement IRIs
    memory = Graph()
    memory.parse(data=turtle, format="turtle")
    parse_s = time.perf_counter() - start
    oxi = pyoxigraph.Store.read_only(str(store_dir))
    default = [pyoxigraph.NamedNode(graph)]
    rows = []
    with open_store(store_dir) as store:
        for q in queries:
            ox_s, ox_rows = _best(lambda q=q: _rows(oxi.query(q["query"], default_graph=default)))
            api_s, _ = _best(lambda q=q: store.query(q["query"], timeout_s=600, max_rows=10_000_000))
            rd_s, rd_rows = _best(lambda q=q: _rows(memory.query(q["query"])))
            rows.append({"name": q["name"], "rows": len(ox_rows), "rdflib_rows": len(rd_rows),
                         "same_rows": len(ox_rows) == len(rd_rows), "same_values": sorted(ox_rows) == sorted(rd_rows),
                         "pyoxigraph_s": round(ox_s, 5), "store_api_s": round(api_s, 4), "rdflib_s": round(rd_s, 4),
                         "rdflib_over_pyoxigraph": round(rd_s / max(ox_s, 1e-6), 1)})
    ratios = [r["rdflib_over_pyoxigraph"] for r in rows]
    return {"rdflib_graph_triples": len(memory), "turtle_bytes": len(turtle.encode("utf-8")),
            "rdflib_parse_s": round(parse_s, 1), "queries": rows,
            "geometric_mean_ratio": round(float(np.exp(np.mean(np.log(ratios)))), 1),
            "all_same_rows": all(r["same_rows"] for r in rows), "all_same_values": all(r["same_values"] for r in rows),
            "totals_s": {"pyoxigraph": round(sum(r["pyoxigraph_s"] for r in rows), 3),
                         "store_api": round(sum(r["store_api_s"] for r in rows), 3),
                         "rdflib": round(sum(r["rdflib_s"] for r in rows), 2)}}


# ----------------------------------------------------------------------------- main
def run(args: argparse.Namespace, work: Path) -> dict:
    runs, store_dir = work / "runs", work / "store"
    runs.mkdir(parents=True)
    kg, harvest, build_s = prepare_runs(runs, args.dataset, args.harvest_run)
    print(f"{args.dataset}: {kg.num_entities} entities, {kg.num_triples} triples (built in {build_s:.1f} s)",
          flush=True)
    store = load_store(kg, store_dir)
    print(f"store: {store['rdf_triples']} RDF triples in {store['load_s']} s, {store['store_mib']} MiB", flush=True)
    queries = query_set(kg)
    harvest_rows = [json.loads(line) for line in open(runs / HARVEST / "tuples.jsonl", encoding="utf-8")]
    urls, plan = request_plan(kg, args.dataset, harvest_rows, queries, n=args.requests, entities=args.entities,
                              seed=args.seed)
    proc, base = start_server(runs, store_dir, "--query-timeout", str(args.query_timeout))
    try:
        load = load_test(base, urls, plan, args.concurrency)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    print(f"load: {load['requests']} requests, {load['requests_per_s']} /s, errors {load['errors']}", flush=True)
    result = {"dataset": {"name": args.dataset, "entities": kg.num_entities, "relations": kg.num_relations,
                          "triples": kg.num_triples, "build_s": round(build_s, 1)},
              "harvest_run": harvest, "store": store, "server_options": {"query_timeout_s": args.query_timeout},
              "load": load, "queries": queries}
    if not args.no_rdflib:
        result["engines"] = compare_engines(kg, store_dir, store["graph"], queries)
        print(f"engines: rdflib / pyoxigraph, geometric mean {result['engines']['geometric_mean_ratio']}x",
              flush=True)
    return result


def main() -> None:
    args = _arguments()
    started = time.time()
    machine = machine_info()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_serve_"))
    try:
        result = run(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "kgprobe serve under load; SPARQL in pyoxigraph vs rdflib",
              "command": "python eval/bench_serve.py " + " ".join(sys.argv[1:]),
              "machine": machine, **result, "seconds": round(time.time() - started, 1)}
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
