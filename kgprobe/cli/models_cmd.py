"""``kgprobe models``: the registry with availability and size."""
from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON (one object per model).")
def models(as_json: bool) -> None:
    """List registered models, whether their weights are installed here, and their size.

    Any local model directory, .gguf file or Hugging Face hub id is accepted wherever a model
    name is, in addition to these names.
    """
    from kgprobe.models import model_table

    rows = model_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<16} {'kind':<17} {'available':<10} {'size':>9}  description")
    for r in rows:
        size = f"{r['size_bytes'] / 2**20:.0f} MiB" if r["size_bytes"] else "-"
        available = "yes" if r["available"] else "no"
        click.echo(f"{r['name']:<16} {r['kind']:<17} {available:<10} {size:>9}  {r['description']}")
        if not r["available"]:
            click.echo(f"{'':<16} install: {r['install']}")
