"""``kgprobe linkpred train|evaluate|encode``: BLP-style inductive link prediction."""
from __future__ import annotations

import json
from pathlib import Path

import click

from kgprobe.cli.options import SEED, OutputPath, options_model


@click.group()
def linkpred() -> None:
    """Inductive link prediction with text encoders (BLP, LEMON negatives).

    \b
    Make a split:  kgprobe data build wordnet --inductive --out data/wn
    Train:         kgprobe linkpred train --data data/wn --out runs/blp
    Evaluate:      kgprobe linkpred evaluate runs/blp --data data/wn
    New entities:  kgprobe linkpred encode runs/blp new.tsv --out runs/blp/new
    """


@linkpred.command()
@click.option("--data", "data", type=click.Path(path_type=Path), required=True,
              help="Inductive split directory (kgprobe data build NAME --inductive --out DIR).")
@click.option("--out", type=OutputPath(), required=True,
              help="Run directory: checkpoint.pt, best.pt, metrics.jsonl, test_metrics.json.")
@click.option("--encoder", default="transformer", show_default=True, help="transformer, bow or embedding.")
@click.option("--model", default="minilm-l6", show_default=True,
              help="Transformer: registry name, local directory or hub id.")
@click.option("--text", type=click.Choice(["description", "label", "both"]), default="description",
              show_default=True, help="Entity text the encoder reads.")
@click.option("--pooling", type=click.Choice(["cls", "mean"]), default="cls", show_default=True,
              help="Transformer: the [CLS] vector or the mean of the token vectors.")
@click.option("--scorer", default="transe", show_default=True, help="transe, distmult, complex, simple, rotate.")
@click.option("--loss", default="margin", show_default=True, help="margin, softplus, adversarial or infonce.")
@click.option("--loss-option", "loss_options", multiple=True, metavar="KEY=VALUE",
              help="A loss parameter, repeatable: margin=1 (margin); gamma=9, alpha=1 (adversarial); "
                   "tau=1, margin=0 (infonce).")
@click.option("--sampler", default="in-batch", show_default=True,
              help="Negatives: in-batch, uniform, bernoulli, lemon, knn-hard.")
@click.option("--sampler-option", "sampler_options", multiple=True, metavar="KEY=VALUE",
              help="A sampler parameter, repeatable: self_negatives=1, self_relations=asymmetric, "
                   "replacement=false (in-batch); n_clusters=15, n_nearest=3 (lemon); filtered=true.")
@click.option("--dim", type=int, default=128, show_default=True, help="Entity embedding size.")
@click.option("--epochs", type=int, default=40, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-5, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--warmup", type=float, default=0.2, show_default=True, help="Warm-up fraction of the steps.")
@click.option("--num-negatives", type=int, default=64, show_default=True, help="Negatives per positive.")
@click.option("--max-length", type=int, default=32, show_default=True, help="Tokens (words for bow) per text.")
@click.option("--patience", type=int, default=None, help="Stop after this many validations without a gain.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from OUT/checkpoint.pt if there is one.")
@click.option("--checkpoint-minutes", type=float, default=10.0, show_default=True,
              help="Also write OUT/checkpoint.pt inside an epoch this often (a resumed run goes on from there). "
                   "SIGTERM or Ctrl-C writes it at the next step and exits with 143 / 130.")
@click.option("--max-train-triples", type=int, default=None,
              help="Train on a random subset of this many triples (quick runs).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--overwrite", is_flag=True,
              help="Replace whatever --out holds (without it, --out must be new, empty or a run of this command).")
def train(data: Path, out: Path, encoder: str, model: str, text: str, pooling: str, scorer: str, loss: str,
          loss_options: tuple[str, ...], sampler: str, sampler_options: tuple[str, ...], dim: int, epochs: int,
          batch_size: int, lr: float,
          warmup: float, num_negatives: int, max_length: int, patience: int | None, device: str, seed: int,
          resume: bool, checkpoint_minutes: float, max_train_triples: int | None, quiet: bool,
          overwrite: bool) -> None:
    """Train a link-prediction model on an inductive split and evaluate it on the test set.

    \b
    Validation ranks against train + valid entities, test against all entities (BLP);
    the best validation epoch (both.realistic.mrr) is kept and its test metrics written
    to OUT/test_metrics.json. Re-running with the same --out resumes.
    """
    from kgprobe.linkpred.losses import get_loss
    from kgprobe.linkpred.run import LinkPredConfig, check_names, parse_key_values, run_training
    from kgprobe.linkpred.samplers import check_sampler_options
    from kgprobe.models import resolve_device

    check_names(encoder=encoder, scorer=scorer, loss=loss, sampler=sampler)
    resolve_device(device)
    cfg = options_model(LinkPredConfig, data=data, out=out, encoder=encoder, model=model, text=text, pooling=pooling,
                        scorer=scorer, loss=loss, loss_options=parse_key_values(loss_options, "--loss-option"),
                        sampler=sampler, sampler_options=parse_key_values(sampler_options, "--sampler-option"), dim=dim,
                        epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup,
                        num_negatives=num_negatives, max_length=max_length, patience=patience, device=device,
                        seed=seed, resume=resume, checkpoint_minutes=checkpoint_minutes,
                        max_train_triples=max_train_triples)
    get_loss(cfg.loss, **cfg.loss_options)  # a wrong option fails here, before the data loads
    check_sampler_options(cfg.sampler, cfg.sampler_options)
    summary = run_training(cfg, progress=not quiet, echo=lambda m: click.echo(m, err=True), overwrite=overwrite)
    click.echo(json.dumps(summary, indent=2))


@linkpred.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--data", "data", type=click.Path(path_type=Path), required=True,
              help="The inductive split directory the run was trained on.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def evaluate(run_dir: Path, data: Path, split: str, device: str) -> None:
    """Print filtered rank metrics (JSON) of the best model in RUN_DIR on a split.

    Keys look like both.realistic.mrr, head.realistic.hits_at_10, ...
    """
    from kgprobe.linkpred.run import evaluate_run

    click.echo(json.dumps(evaluate_run(run_dir, data, split=split, device=device), indent=2))


@linkpred.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("texts", type=click.Path(path_type=Path))
@click.option("--out", type=OutputPath(), required=True,
              help="Directory to write embeddings.npy and ids.txt to.")
@click.option("--neighbors", "neighbors", type=click.Path(path_type=Path), default=None,
              help="A KG (file or directory): print its entities nearest to every new one.")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Neighbours to print.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True,
              help="Replace whatever --out holds (without it, --out must be new, empty or an earlier `encode` output).")
def encode(run_dir: Path, texts: Path, out: Path, neighbors: Path | None, k: int, device: str,
           overwrite: bool) -> None:
    """Embed unseen entities from TEXTS (id<TAB>text lines) with the trained encoder of RUN_DIR.

    Writes OUT/embeddings.npy (one row per line, float32) and OUT/ids.txt.
    """
    from kgprobe.linkpred.run import encode_file

    result = encode_file(run_dir, texts, out, device=device, neighbors=neighbors, k=k, overwrite=overwrite)
    click.echo(f"wrote {result['shape'][0]} x {result['shape'][1]} embeddings to {out}", err=True)
    for entity, near in result.get("neighbors", {}).items():
        click.echo(f"{entity}\t" + "\t".join(f"{e} ({s:.3f})" for e, s in near))
