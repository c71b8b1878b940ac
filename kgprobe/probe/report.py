"""The unlearning report: JSON, a per-method TSV summary and a behavioural-vs-intrinsic plot.

Input: one dict per (concept, method) run::

    {"concept": "country:france", "method": "npo",
     "before": behavioural(...), "after": behavioural(...),     # kgprobe.probe.measure
     "intrinsic": intrinsic(...),
     "log": unlearn(...)}                                        # optional

Output in ``out_dir`` (each file written atomically):

* ``unlearning_report.json``: ``{"methods", "concepts": {concept: {method: run}}, "summary":
  {method: means}}`` where a run keeps before / after / intrinsic plus the log without its
  per-step losses (``n_steps``, ``final_loss``, ``seconds``);
* ``unlearning_summary.tsv``: the summary, one row per method;
* ``unlearning_report.png``: left, intrinsic change of the concept vector (1 - Jaccard of its
  top-k tokens, or 1 - cosine) against the drop in forget accuracy, one colour and marker per
  method, small points per concept and a large one for the method mean; right, attack accuracy
  against forget accuracy after unlearning (points above the diagonal: the indirect questions
  still recover what the direct ones lost).

Summary columns are means over the method's concepts: ``forget_acc_before/after``,
``forget_acc_drop`` (before - after), ``retain_acc_drop``, ``attack_acc_before/after``,
``forget_logprob_drop``, ``retain_logprob_drop``, the fact probes' (:mod:`kgprobe.probe.facts`: the
concept's facts vs a sample of others) ``forget_fact_acc_before/after/drop`` and
``retain_fact_acc_drop``, and the six intrinsic figures; a figure missing
for every concept (e.g. no attack set) is None.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError

__all__ = ["write_report", "summarise", "SUMMARY_COLUMNS"]

REPORT_JSON = "unlearning_report.json"
SUMMARY_TSV = "unlearning_summary.tsv"
REPORT_PNG = "unlearning_report.png"

_INTRINSIC = ("cosine", "l2", "jaccard_topk", "layer_cosine", "layer_l2", "layer_jaccard", "jaccard_top200_raw",
              "concept_token_share")
_STYLES = ("role", "grandmother", "in_context", "german")  # kgprobe.probe.attacks.ATTACK_STYLES
SUMMARY_COLUMNS = ("n_concepts", "forget_acc_before", "forget_acc_after", "forget_acc_drop", "retain_acc_before",
                   "retain_acc_after", "retain_acc_drop", "attack_acc_before", "attack_acc_after",
                   *(f"attack_{style}_acc_after" for style in _STYLES),
                   "forget_logprob_drop", "retain_logprob_drop", "forget_fact_acc_before", "forget_fact_acc_after",
                   "forget_fact_acc_drop", "retain_fact_acc_drop", *_INTRINSIC)
_REQUIRED = ("concept", "method", "before", "after", "intrinsic")
_STYLE = {"gradient-ascent": ("tab:red", "v"), "gradient-difference": ("tab:orange", "s"),
          "npo": ("tab:blue", "o"), "ablation": ("tab:green", "X")}
_OTHER_STYLES = [("tab:purple", "D"), ("tab:brown", "P"), ("tab:pink", "*"), ("tab:gray", "^"), ("tab:olive", "h")]


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _diff(a: dict, b: dict, key: str) -> float | None:
    x, y = _number(a.get(key)), _number(b.get(key))
    return None if x is None or y is None else x - y


def _row(run: dict) -> dict[str, float | None]:
    """The per-run figures the summary averages."""
    before, after, intr = run["before"], run["after"], run["intrinsic"]
    row = {
        "forget_acc_before": _number(before.get("forget_acc")), "forget_acc_after": _number(after.get("forget_acc")),
        "forget_acc_drop": _diff(before, after, "forget_acc"),
        "retain_acc_before": _number(before.get("retain_acc")), "retain_acc_after": _number(after.get("retain_acc")),
        "retain_acc_drop": _diff(before, after, "retain_acc"),
        "attack_acc_before": _number(before.get("attack_acc")), "attack_acc_after": _number(after.get("attack_acc")),
        "forget_logprob_drop": _diff(before, after, "forget_logprob"),
        "retain_logprob_drop": _diff(before, after, "retain_logprob"),
        "forget_fact_acc_before": _number(before.get("forget_fact_acc")),
        "forget_fact_acc_after": _number(after.get("forget_fact_acc")),
        "forget_fact_acc_drop": _diff(before, after, "forget_fact_acc"),
        "retain_fact_acc_drop": _diff(before, after, "retain_fact_acc"),
    }
    row.update({key: _number(intr.get(key)) for key in _INTRINSIC})
    for style in _STYLES:  # ConceptVectors' attacks, after unlearning
        row[f"attack_{style}_acc_after"] = _number((after.get("attack_style_acc") or {}).get(style))
    return row


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _check(results: Sequence[dict]) -> None:
    if not results:
        raise KgprobeError("unlearning report: no results to write")
    seen = set()
    for i, run in enumerate(results):
        if not isinstance(run, dict):
            raise KgprobeError(f"unlearning report: result {i} is a {type(run).__name__}, not a dict")
        missing = [key for key in _REQUIRED if key not in run]
        if missing:
            raise KgprobeError(f"unlearning report: result {i} lacks {', '.join(missing)}")
        key = (str(run["concept"]), str(run["method"]))
        if key in seen:
            raise KgprobeError(f"unlearning report: concept {key[0]!r} has two results for method {key[1]!r}")
        seen.add(key)


def summarise(results: Sequence[dict]) -> dict[str, dict[str, float | int | None]]:
    """``{method: {column: mean over concepts}}`` in first-seen method order."""
    _check(results)
    by_method: dict[str, list[dict]] = {}
    for run in results:
        by_method.setdefault(str(run["method"]), []).append(_row(run))
    summary = {}
    for method, rows in by_method.items():
        means: dict[str, float | int | None] = {"n_concepts": len(rows)}
        means.update({col: _mean([r[col] for r in rows]) for col in SUMMARY_COLUMNS if col != "n_concepts"})
        summary[method] = means
    return summary


def _compact_log(log: dict | None) -> dict | None:
    if not log:
        return None
    losses = log.get("losses") or []
    out = {key: value for key, value in log.items() if key != "losses"}
    out["n_steps"] = len(losses)
    out["first_loss"] = _number(losses[0]) if losses else None
    out["final_loss"] = _number(losses[-1]) if losses else None
    return out


def _clean(value):
    """JSON-safe copy: NaN / inf become None, tuples lists, keys strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy / 0-d torch scalars
        return _clean(value.item())
    return value


def _tsv(summary: dict) -> str:
    def cell(v):
        return "" if v is None else (str(v) if isinstance(v, int) else f"{v:.6g}")
    lines = ["\t".join(("method", *SUMMARY_COLUMNS))]
    lines += ["\t".join((method, *(cell(row[c]) for c in SUMMARY_COLUMNS))) for method, row in summary.items()]
    return "\n".join(lines) + "\n"


def _styles(methods: list[str]) -> dict[str, tuple[str, str]]:
    extra = iter(_OTHER_STYLES * (len(methods) // len(_OTHER_STYLES) + 1))
    return {m: _STYLE[m] if m in _STYLE else next(extra) for m in methods}


def _attack_after(row: dict) -> float | None:
    """The right panel's y: accuracy on the indirect questions after unlearning, or, for concepts
    that have none (WordNet concepts), the mean over ConceptVectors' attack styles."""
    if row["attack_acc_after"] is not None:
        return row["attack_acc_after"]
    return _mean([row[f"attack_{style}_acc_after"] for style in _STYLES])


def _plot(results: Sequence[dict], summary: dict, path: Path, *, intrinsic_axis: str) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window (and no display needed)
    import matplotlib.pyplot as plt

    methods = list(summary)
    styles = _styles(methods)
    key, label = (("jaccard_topk", "1 - Jaccard of the concept vector's top-k tokens") if intrinsic_axis == "jaccard"
                  else ("cosine", "1 - cosine(concept vector before, after)"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    for method in methods:
        colour, marker = styles[method]
        rows = [_row(run) for run in results if str(run["method"]) == method]
        xs = [None if r[key] is None else 1 - r[key] for r in rows]
        ys = [r["forget_acc_drop"] for r in rows]
        pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
        if pts:
            left.scatter(*zip(*pts), color=colour, marker=marker, alpha=0.35, s=22)
        mean = summary[method]
        if mean[key] is not None and mean["forget_acc_drop"] is not None:
            left.scatter([1 - mean[key]], [mean["forget_acc_drop"]], color=colour, marker=marker, s=110,
                         edgecolor="black", label=method)
        pts = [(x, y) for x, y in ((r["forget_acc_after"], _attack_after(r)) for r in rows)
               if x is not None and y is not None]
        if pts:
            right.scatter(*zip(*pts), color=colour, marker=marker, alpha=0.35, s=22)
        attack = _attack_after(mean)
        if mean["forget_acc_after"] is not None and attack is not None:
            right.scatter([mean["forget_acc_after"]], [attack], color=colour, marker=marker, s=110,
                          edgecolor="black", label=method)
    left.set_xlabel(f"intrinsic change: {label}")
    left.set_ylabel("behavioural change: drop in forget accuracy")
    left.set_title("Behaviour vs. concept vector")
    right.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    right.set_xlim(-0.05, 1.05)
    right.set_ylim(-0.05, 1.05)
    right.set_xlabel("forget accuracy after unlearning")
    right.set_ylabel("attack accuracy after unlearning")
    right.set_title("Attacks (indirect questions, else the attack styles' mean)", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Unlearning: {len({str(r['concept']) for r in results})} concept(s), {len(methods)} method(s)"
                 " (large markers: means)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)  # tmp has no suffix: name the format
    plt.close(fig)


def write_report(results: Sequence[dict], out_dir: str | Path, *, intrinsic_axis: str = "jaccard") -> dict[str, Path]:
    """Write the JSON report, the TSV summary and the plot; return ``{"json", "tsv", "png"}`` paths.

    ``intrinsic_axis`` ("jaccard" or "cosine") picks the x axis of the left panel.
    """
    if intrinsic_axis not in ("jaccard", "cosine"):
        raise KgprobeError(f"unlearning report: intrinsic_axis must be 'jaccard' or 'cosine', got {intrinsic_axis!r}")
    summary = summarise(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    concepts: dict[str, dict[str, dict]] = {}
    for run in results:
        entry = {"before": run["before"], "after": run["after"], "intrinsic": run["intrinsic"],
                 "log": _compact_log(run.get("log"))}
        concepts.setdefault(str(run["concept"]), {})[str(run["method"])] = entry
    report = {"methods": list(summary), "n_concepts": len(concepts), "summary": summary, "concepts": concepts}
    paths = {"json": out / REPORT_JSON, "tsv": out / SUMMARY_TSV, "png": out / REPORT_PNG}
    text = json.dumps(_clean(report), indent=2, allow_nan=False) + "\n"
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(text)
    with atomic_path(paths["tsv"]) as tmp:
        tmp.write_text(_tsv(summary))
    _plot(results, summary, paths["png"], intrinsic_axis=intrinsic_axis)
    return paths
