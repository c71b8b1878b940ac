"""``kgprobe linkpred train|evaluate|encode``: BLP-style inductive link prediction."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import click

from kgprobe.cli.options import (
    SEED,
    OutputPath,
    model_options,
    option_names,
    options_model,
    parse_settings,
    settings_option,
)


class _LinkpredGroup(click.Group):
    """``kgprobe linkpred``; its ``train`` command is made on first use, from the configuration
    model (which imports pydantic and torch: not something every ``kgprobe`` call should wait for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "train"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _train_command() if name == "train" else super().get_command(ctx, name)


@click.group(cls=_LinkpredGroup)
def linkpred() -> None:
    """Inductive link prediction with text encoders (BLP, LEMON negatives).

    \b
    Make a split:  kgprobe data build wordnet --inductive --out data/wn
    Train:         kgprobe linkpred train --data data/wn --out runs/blp
    Evaluate:      kgprobe linkpred evaluate runs/blp --data data/wn
    New entities:  kgprobe linkpred encode runs/blp new.tsv --out runs/blp/new
    """


def _train_fields() -> tuple[list[str], list[str]]:
    """The fields of the configuration with an option of their own (``--data`` and ``--out``
    first, then the model's order) and those set with ``--set KEY=VALUE``."""
    from kgprobe.linkpred.config import LinkPredConfig

    advanced = list(LinkPredConfig.ADVANCED)
    first = ["data", "out"]
    return first + [f for f in LinkPredConfig.model_fields if f not in first and f not in advanced], advanced


@functools.cache
def _train_command() -> click.Command:
    """``kgprobe linkpred train``: its options made from
    :class:`~kgprobe.linkpred.config.LinkPredConfig`, the one configuration of a training run."""
    from kgprobe.linkpred.config import LinkPredConfig

    flags, advanced = _train_fields()
    options = model_options(LinkPredConfig, flags, types={"data": click.Path(path_type=Path), "out": OutputPath(),
                                                          "seed": SEED})
    return click.command("train")(options(settings_option(LinkPredConfig, advanced)(_QUIET(_OVERWRITE(train)))))


_QUIET = click.option("--quiet", is_flag=True, help="No progress bars.")
_OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace whatever --out holds (without it, --out must "
                                                            "be new, empty or a run of this command).")


def train(quiet: bool, overwrite: bool, settings: tuple[str, ...], **options: Any) -> None:
    """Train a link-prediction model on an inductive split and evaluate it on the test set.

    \b
    Validation ranks against train + valid entities, test against all entities (BLP);
    the best validation epoch (both.realistic.mrr) is kept and its test metrics written
    to OUT/test_metrics.json. Re-running with the same --out resumes.
    """
    from kgprobe.linkpred.config import LinkPredConfig, parse_key_values
    from kgprobe.linkpred.run import check_names, run_training
    from kgprobe.models import resolve_device

    flags, advanced = _train_fields()
    names = option_names(LinkPredConfig, flags)
    check_names(encoder=options["encoder"], scorer=options["scorer"], loss=options["loss"],
                sampler=options["sampler"])
    resolve_device(options["device"])
    # a repeatable option (a dict field: --loss-option KEY=VALUE ...) comes as a tuple of strings
    values = {name: parse_key_values(value, f"--{names[name]}") if isinstance(value, tuple) else value
              for name, value in options.items()}
    values.update(parse_settings(settings, LinkPredConfig, advanced))
    cfg = options_model(LinkPredConfig, renames={**names, **{name: f"set {name}" for name in advanced}}, **values)
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
