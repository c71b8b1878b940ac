"""A CPU-sized pilot of a link-prediction training setting: one epoch on a random subset of an
inductive split's training triples, validation ranks against a subset of the candidates.

A whole run on the WordNet split takes hours on a 2-core CPU (one InfoNCE epoch: 1 h 44 min; the
pipeline's eight: about 12 hours; BLP's 16 margin epochs: about 35 hours), so settings are screened
here first and only the promising ones get a whole run, on the CPU or a GPU. A pilot trains one
epoch on ``--train-triples`` random training triples (encoder and sampler are built as a training
run builds them, ``build_encoder`` and ``build_sampler``: the sampler still sees the whole training
part, relation statistics and known positives, and replaces with training entities), then ranks
``--valid-triples`` random validation triples, filtered by every known triple, against their own
entities plus ``--extra-candidates`` random train/valid entities (realistic ranks, head and tail
pooled).
Defaults (15,000 triples, batch 128, 400 validation triples, 4,000 extra candidates: about 9
minutes on 2 cores with MiniLM-L6) make figures comparable with each other, not with the
pipeline's, whose candidates are all 117,659 synsets; ``--extra-candidates 200000`` ranks against
all train and valid entities, as the pipeline's validation does (about 10 more minutes).

Each pilot appends one JSON line to ``--out`` (written whole to a temporary file and renamed);
a setting already in the file is printed and not run again (``--force`` runs it anyway), so a
list of pilots can be restarted after an interruption. Same arguments, same figures.

    python eval/pilot_linkpred.py --data runs/linkpred_wordnet/wordnet_split --loss infonce \\
        --loss-option tau=0.5 --negatives 254 --sampler-option self_negatives=1 \\
        --sampler-option self_relations=asymmetric
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

from kgprobe.atomic import atomic_path  # noqa: E402
from kgprobe.errors import KgprobeError  # noqa: E402
from kgprobe.linkpred.config import TrainConfig, parse_key_values  # noqa: E402
from kgprobe.linkpred.encoders import build_encoder  # noqa: E402
from kgprobe.linkpred.evaluator import evaluate_model  # noqa: E402
from kgprobe.linkpred.losses import get_loss  # noqa: E402
from kgprobe.linkpred.run import entity_texts_of, load_split_data  # noqa: E402
from kgprobe.linkpred.samplers import build_sampler, check_sampler_options  # noqa: E402
from kgprobe.linkpred.scorers import get_scorer  # noqa: E402
from kgprobe.linkpred.trainer import Trainer  # noqa: E402
from kgprobe.seeding import seed_everything  # noqa: E402
from machine import machine_info  # noqa: E402

DEFAULT_OUT = ROOT / "eval" / "results" / "linkpred_pilots.jsonl"


def pilot_setting(args) -> dict:
    """Everything that decides a pilot's figures (the key under which it is stored)."""
    return {"data": Path(args.data).name, "encoder": args.encoder, "model": args.model, "text": args.text,
            "pooling": args.pooling, "max_length": args.max_length, "dim": args.dim, "scorer": args.scorer,
            "loss": args.loss, "loss_options": parse_key_values(args.loss_option, "--loss-option"),
            "sampler": args.sampler, "sampler_options": parse_key_values(args.sampler_option, "--sampler-option"),
            "negatives": args.negatives, "batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup,
            "train_triples": args.train_triples, "valid_triples": args.valid_triples,
            "extra_candidates": args.extra_candidates, "seed": args.seed}


def run_pilot(setting: dict, data_dir: str | Path) -> dict:
    """Train one epoch as ``setting`` says and return its validation figures."""
    data = load_split_data(data_dir)
    graph, seed = data.graph, setting["seed"]
    texts = entity_texts_of(graph, setting["text"])
    gen = torch.Generator().manual_seed(seed)
    train = data.triples["train"]
    train = train[torch.randperm(len(train), generator=gen)[:setting["train_triples"]]]
    valid = data.triples["valid"]
    valid = valid[torch.randperm(len(valid), generator=gen)[:setting["valid_triples"]]]
    pool = torch.cat([data.entities["train"], data.entities["valid"]])
    extra = pool[torch.randperm(len(pool), generator=gen)[:setting["extra_candidates"]]]
    candidates = torch.unique(torch.cat([valid[:, 0], valid[:, 2], extra]))
    seed_everything(seed)
    # encoder and sampler built as a training run builds them (kgprobe.linkpred.run.run_training)
    encoder = build_encoder(setting["encoder"], texts, setting, train_entities=data.entities["train"], seed=seed)
    sampler = build_sampler(setting["sampler"], data, setting["sampler_options"])
    config = TrainConfig(batch_size=setting["batch_size"], epochs=1, lr=setting["lr"], warmup=setting["warmup"],
                         num_negatives=setting["negatives"], seed=seed)
    trainer = Trainer(encoder=encoder, scorer=get_scorer(setting["scorer"]),
                      loss=get_loss(setting["loss"], **setting["loss_options"]), sampler=sampler,
                      train_triples=train, num_relations=graph.num_relations, config=config, device="cpu",
                      progress=False)
    t0 = time.time()
    trainer.fit(resume=False)
    t1 = time.time()
    model = trainer.model.eval()
    with torch.no_grad():
        emb = torch.zeros(graph.num_entities, setting["dim"])  # only the candidates are encoded
        emb[candidates] = model.all_entity_vectors(256, entities=candidates)
        rel = model.relations.weight.detach().float()
        metrics = evaluate_model(emb, rel, model.scorer, valid, filter_triples=data.all_triples,
                                 candidates=candidates)
        # how often a tail query's own head is the top candidate (TransE's failure without
        # self-negatives): unfiltered Hits@1 of (h, r, h), ranked chunk by chunk like any triple
        loops = evaluate_model(emb, rel, model.scorer, valid[:, [0, 1, 0]], filtered=False, candidates=candidates,
                               sides=("tail",))
        head_first = loops["tail.realistic.hits_at_1"]
    figures = {key: round(metrics[f"both.realistic.{key}"], 4) for key in ("mrr", "hits_at_1", "hits_at_10")}
    return {**figures, "head_first_for_tail_queries": round(head_first, 4), "candidates": len(candidates),
            "train_seconds": round(t1 - t0, 1), "eval_seconds": round(time.time() - t1, 1)}


def table(rows: list[dict]) -> str:
    """The stored pilots as a Markdown table: the settings that vary between them, then the figures."""
    settings = [r["setting"] for r in rows]
    varying = [k for k in settings[0] if any(json.dumps(s.get(k)) != json.dumps(settings[0].get(k)) for s in settings)]
    figures = ("mrr", "hits_at_1", "hits_at_10", "head_first_for_tail_queries")
    lines = ["| " + " | ".join(varying + list(figures)) + " |", "|" + "---|" * (len(varying) + len(figures))]
    for r in rows:
        cells = [json.dumps(r["setting"].get(k)).replace('"', "") for k in varying]
        lines.append("| " + " | ".join(cells + [f"{r['result'][k]:.4f}" for k in figures]) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="an inductive split directory (kgprobe data build NAME --inductive)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSONL file the pilot's line is appended to")
    p.add_argument("--encoder", default="transformer")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--text", default="both", choices=["description", "label", "both"])
    p.add_argument("--pooling", default="cls", choices=["cls", "mean"])
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--scorer", default="transe")
    p.add_argument("--loss", default="margin")
    p.add_argument("--loss-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--sampler", default="in-batch")
    p.add_argument("--sampler-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--negatives", type=int, default=64, help="negatives per positive")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--train-triples", type=int, default=15_000)
    p.add_argument("--valid-triples", type=int, default=400)
    p.add_argument("--extra-candidates", type=int, default=4_000,
                   help="random train/valid entities added to the candidates (more than there are: all of them, "
                        "the pipeline's validation candidates)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="run even if the setting is already in --out")
    p.add_argument("--table", action="store_true", help="print the pilots stored in --out as a table and stop")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    if args.table:
        print(table(rows) if rows else f"no pilots in {out}")
        return {"rows": len(rows)}
    if not args.data:
        p.error("--data is required (unless --table)")
    try:
        setting = pilot_setting(args)
        if not 0 <= args.seed < 2**32:  # what seed_everything (numpy's global seeding) takes
            raise KgprobeError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
        # a bad option fails here, before the data loads
        get_loss(setting["loss"], **setting["loss_options"])
        check_sampler_options(setting["sampler"], setting["sampler_options"])
    except (KgprobeError, TypeError) as err:
        print(f"pilot_linkpred: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    done = [r for r in rows if r["setting"] == setting]
    if done and not args.force:
        print(json.dumps(done[-1]))
        return done[-1]
    try:
        result = run_pilot(setting, args.data)
    except KgprobeError as err:  # e.g. --data is not a split directory
        print(f"pilot_linkpred: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    row = {"setting": setting, "result": result, "machine": machine_info(torch.device("cpu"))}
    before = out.read_text() if out.exists() else ""  # read again: another pilot may have finished meanwhile
    with atomic_path(out) as tmp:
        tmp.write_text(before + ("" if not before or before.endswith("\n") else "\n") + json.dumps(row) + "\n")
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
