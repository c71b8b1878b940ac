"""Part (d) of eval/bench_linkpred.py: kgprobe's trainer against BLP's own training loop, step by step.

BLP's settings (its train.py defaults and WN18RR scripts): a MiniLM-L6 encoder ([CLS], a
bias-free map to 128 dimensions), texts cut at 32 tokens, batch 64, TransE on unit vectors,
margin loss (margin 1) over 64 in-batch negatives per positive, lr 2e-5 with 20 % warm-up then
linear decay. The data: ``--d-triples`` (3,200) WordNet triples drawn with a seeded permutation,
entity text "name: gloss"; one epoch of 50 steps.

Each variant is one paired run in one process: kgprobe's real ``Trainer.fit`` runs, and after
every kgprobe step a step callback runs one step of BLP's loop (eval/blp_loop.py) on *the same
positive triples* (the sampler's input is recorded), so a burst of load on a shared machine hits
both alike. Both start from the same weights (BLP's projection and relation table are copies of
kgprobe's initial ones). Reported per variant: the time of every step of both, triples/s over
steps 3..N (the first two warm caches), the speed ratio kgprobe / BLP, both loss curves and their
means over the last 10 steps, and whether kgprobe's is no worse (within ``LOSS_TOLERANCE``).

Variants (``--d-variants``): ``default`` (TrainConfig's defaults: fp32 on a CPU, dropout on),
``fast`` (bf16 autocast — on a CPU where it is native, ``cpu_bf16`` — and dropout off, as BLP's
encoder has it), ``fast_dropout`` (bf16 with dropout on). kgprobe's fused AdamW and its reading of
a batch's texts in length groups are on in every variant (they change no maths).

    python eval/bench_linkpred.py --part d               # ~12 min on 2 CPU cores
    python eval/bench_linkpred.py --part d --quick       # 6 steps of 16 triples, a smoke test
    python eval/bench_linkpred.py --part d --d-threads 1 # one thread each (a shared machine); key "cpu:1-thread"
"""
from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blp_loop import BLPLoop  # noqa: E402  (eval/blp_loop.py, beside this script)
from kgprobe.linkpred import TrainConfig, Trainer, get_loss, get_sampler, get_scorer  # noqa: E402
from kgprobe.linkpred.encoders import TransformerEncoder  # noqa: E402
from kgprobe.models.device import cpu_has_native_bf16, resolve_device  # noqa: E402
from machine import machine_info  # noqa: E402

#: kgprobe's last-10-step mean loss may exceed BLP's by this share and still count as "no worse":
#: the two draw different negatives, so their curves differ by sampling noise
LOSS_TOLERANCE = 0.05
WARM_STEPS = 2

VARIANTS = {
    "default": {},
    "fast": {"amp": True, "cpu_bf16": True, "dropout": False},
    "fast_dropout": {"amp": True, "cpu_bf16": True, "dropout": True},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def wordnet_sample(num_triples: int, seed: int):
    """``num_triples`` WordNet triples (seeded draw), their entities' "name: gloss" texts, the relation count."""
    from kgprobe.kg.datasets import build_dataset
    from kgprobe.kg.texts import entity_texts

    kg = build_dataset("wordnet")
    pick = torch.randperm(kg.num_triples, generator=torch.Generator().manual_seed(seed))[:num_triples]
    triples = kg.triples[pick]
    entities, flat = torch.unique(triples[:, [0, 2]], return_inverse=True)
    triples = torch.stack([flat[:, 0], triples[:, 1], flat[:, 1]], dim=1)
    texts = entity_texts(kg, "both")
    return triples, [texts[i] for i in entities.tolist()], kg.num_relations


def paired_run(variant: str, triples: torch.Tensor, texts: list[str], num_relations: int, *, args,
               device: torch.device) -> dict:
    """One kgprobe epoch with a BLP step after each of its steps, on the same positives."""
    batch = args.d_batch
    options = dict(VARIANTS[variant])
    if device.type == "cuda":
        options.pop("cpu_bf16", None)
    config = TrainConfig(epochs=1, batch_size=batch, lr=2e-5, warmup=0.2, num_negatives=64, drop_last=True,
                         checkpoint_minutes=None, restore_best=False, seed=args.seed, **options)
    encoder = TransformerEncoder(texts=texts, model="minilm-l6", dim=128, pooling="cls", max_length=32,
                                 seed=args.seed)
    sampler = get_sampler("in-batch", num_entities=len(texts), num_relations=num_relations, triples=triples)
    seen: list[torch.Tensor] = []
    draw = sampler.sample_negatives

    def recording(positives, k, *, generator=None):
        seen.append(positives)
        return draw(positives, k, generator=generator)

    sampler.sample_negatives = recording
    steps = len(triples) // batch
    record = {"kgprobe_s": [], "blp_s": [], "kgprobe_loss": [], "blp_loss": []}
    blp: BLPLoop | None = None
    mark = [0.0]

    def after_step(trainer, i, loss):
        nonlocal blp
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record["kgprobe_loss"].append(float(loss))
        record["kgprobe_s"].append(time.perf_counter() - mark[0])
        t0 = time.perf_counter()
        record["blp_loss"].append(blp.step(seen[-1].to(device)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record["blp_s"].append(time.perf_counter() - t0)
        mark[0] = time.perf_counter()

    trainer = Trainer(encoder=encoder, scorer=get_scorer("transe"), loss=get_loss("margin"), sampler=sampler,
                      train_triples=triples, num_relations=num_relations, config=config, device=device,
                      progress=False, step_callbacks=[after_step])
    # BLP starts where kgprobe starts: the same transformer weights, projection and relation table
    blp = BLPLoop(copy.deepcopy(encoder.transformer), encoder.input_ids.cpu(), encoder.lengths,
                  num_relations=num_relations, dim=128, lr=2e-5, num_negatives=64, total_steps=steps,
                  seed=args.seed).to(device)
    with torch.no_grad():
        blp.enc_linear.weight.copy_(trainer.model.encoder.proj.weight)
        blp.rel_emb.weight.copy_(trainer.model.relations.weight)
    blp.text_data = blp.text_data.to(device)
    log(f"part d: {variant} ({options or 'defaults'}), {steps} paired steps of {batch} triples")
    mark[0] = time.perf_counter()
    trainer.fit(resume=False)
    return summarize(variant, options, record, batch)


def summarize(variant: str, options: dict, record: dict, batch: int) -> dict:
    timed = slice(WARM_STEPS, None)
    k_time, b_time = sum(record["kgprobe_s"][timed]), sum(record["blp_s"][timed])
    n = len(record["kgprobe_s"][timed]) * batch
    last = slice(-10, None)
    k_loss, b_loss = statistics.mean(record["kgprobe_loss"][last]), statistics.mean(record["blp_loss"][last])
    out = {
        "options": options,
        "kgprobe_triples_per_s": round(n / k_time, 2),
        "blp_triples_per_s": round(n / b_time, 2),
        "speedup_kgprobe_over_blp": round(b_time / k_time, 3),
        "median_step_ratio": round(statistics.median(
            b / k for b, k in zip(record["blp_s"][timed], record["kgprobe_s"][timed])), 3),
        "kgprobe_last10_loss": round(k_loss, 4),
        "blp_last10_loss": round(b_loss, 4),
        "loss_no_worse": k_loss <= b_loss * (1 + LOSS_TOLERANCE),
        "steps": {key: [round(v, 4) for v in values] for key, values in record.items()},
    }
    log(f"part d: {variant}: kgprobe {out['kgprobe_triples_per_s']} vs BLP {out['blp_triples_per_s']} triples/s "
        f"({out['speedup_kgprobe_over_blp']}x); last-10 loss {out['kgprobe_last10_loss']} vs {out['blp_last10_loss']}")
    return out


def part_d(args) -> dict:
    device = resolve_device(args.device)
    if args.d_threads:
        torch.set_num_threads(args.d_threads)
    torch.manual_seed(args.seed)
    num = args.d_triples or (16 * 6 if args.quick else 3_200)
    if args.quick:
        args.d_batch = 16
    triples, texts, num_relations = wordnet_sample(num, args.seed)
    variants = {name: paired_run(name, triples, texts, num_relations, args=args, device=device)
                for name in args.d_variants}
    key = "cpu" if device.type == "cpu" else f"gpu:{torch.cuda.get_device_name(device)}"
    if device.type == "cpu" and args.d_threads:
        key = f"cpu:{args.d_threads}-thread{'s' if args.d_threads > 1 else ''}"
    return {"trainer_vs_blp": {key: {
        "what": "kgprobe's Trainer.fit vs a re-implementation of BLP's training step (eval/blp_loop.py), paired "
                "step by step on the same positives; triples/s over the steps after the first "
                f"{WARM_STEPS}; loss = mean of the last 10 steps (no worse: within {LOSS_TOLERANCE:.0%})",
        "settings": {"encoder": "minilm-l6 [CLS] -> 128, max 32 tokens", "batch": args.d_batch,
                     "negatives": 64, "scorer": "transe", "loss": "margin 1", "lr": 2e-5, "warmup": 0.2,
                     "triples": len(triples), "entities": len(texts), "text": "both", "seed": args.seed},
        "cpu_native_bf16": cpu_has_native_bf16(),
        "machine": machine_info(device),
        "variants": variants,
    }}}
