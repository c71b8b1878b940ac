"""Benchmark: scale-out on existing engines, the three parts in one result file.

* ``harvest``: R relations one after the other in-process against each as a Ray task sharing the
  device (``eval/scale_harvest.py``);
* ``ddp``: link-prediction training with 1 vs 2 torchrun ranks (gloo on a CPU, NCCL on GPUs) and
  the MRR of 1 rank x batch B against 2 ranks x B/2 with gathered negatives (``eval/scale_ddp.py``);
* ``index``: exact nearest-neighbour search over 1 vs N shards (``eval/scale_index.py``).

Each part is its own script, run here as a child process with its own arguments (after ``--``)
and merged into ``--out`` under ``parts.NAME``, keyed by the machine it ran on (a CPU run and a GPU
run of the same part sit side by side). ``--add NAME=FILE`` merges a result file that part's
script wrote earlier instead of running it again.

    python eval/bench_scale.py --part harvest -- --local-threads 1
    python eval/bench_scale.py --part ddp
    python eval/bench_scale.py --add index=/tmp/scale_index.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgprobe.atomic import write_json  # noqa: E402

PARTS = {"harvest": "scale_harvest.py", "ddp": "scale_ddp.py", "index": "scale_index.py"}


def machine_key(result: dict) -> str:
    """``cpu`` or the GPU's name, from the ``machine`` record every part writes."""
    machine = result.get("machine") or {}
    return "gpu:" + str(machine.get("device_name")) if machine.get("cuda") else "cpu"


def run_part(name: str, args: list[str]) -> dict:
    """Run the part's script with ``args`` and read the JSON it writes to ``--out``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        subprocess.run([sys.executable, str(ROOT / "eval" / PARTS[name]), *args, "--out", str(out)], check=True)
        return json.loads(out.read_text(encoding="utf-8"))


def merge(record: dict | None, name: str, result: dict) -> dict:
    """``record`` (None: a new one) with ``result`` as ``parts[name][machine]``; other parts and
    machines are kept."""
    record = record or {"benchmark": "scale", "parts": {}, "scripts": {n: f"eval/{s}" for n, s in PARTS.items()}}
    record["parts"].setdefault(name, {})[machine_key(result)] = result
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=sorted(PARTS), action="append", default=[], help="run this part (repeatable)")
    ap.add_argument("--add", action="append", default=[], metavar="NAME=FILE",
                    help="merge a result file the part's script wrote earlier")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "scale.json")
    ap.add_argument("script_args", nargs="*", help="after --: arguments for the part's script")
    args = ap.parse_args()
    if not args.part and not args.add:
        ap.error("give --part NAME or --add NAME=FILE")
    results = [(name, run_part(name, args.script_args)) for name in args.part]
    for item in args.add:
        name, _, file = item.partition("=")
        if name not in PARTS or not file:
            ap.error(f"--add wants NAME=FILE with NAME one of {', '.join(PARTS)}, got {item!r}")
        results.append((name, json.loads(Path(file).read_text(encoding="utf-8"))))
    record = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else None
    for name, result in results:
        record = merge(record, name, result)
    write_json(args.out, record)
    print(f"wrote {args.out}: " + ", ".join(f"{n} ({machine_key(r)})" for n, r in results))


if __name__ == "__main__":
    main()
