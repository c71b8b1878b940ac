"""The null-controlled validation of concept vectors, concept by concept (see :mod:`kgprobe.probe.nulls`).

Per concept ``c``: its questions ``Q`` (its first ``max_questions``; ``questions="known"``: only
those the intact model answers) and ``unrelated_size`` answered questions of other concepts ``U``
(a seeded sample per concept); two tests, each against its own null:

- ``single``: the concept's first candidate vector (``locate``'s ranking);
- ``set``: its first ``set_size`` candidates together (when it has two or more), against random
  sets of as many norm-matched columns from the same layers.

All tests of a run are corrected together (Benjamini-Hochberg by default, :func:`nulls.adjust`); a
concept *beats its null* when one of its tests has an adjusted p below ``alpha``. Records go to a
:class:`~kgprobe.checkpoint.ChunkLog` (one line per concept), so a killed run resumes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from kgprobe.checkpoint import ChunkLog
from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import QA, Concept
from kgprobe.probe.nulls import InterventionRunner, NullParams, adjust, null_test
from kgprobe.probe.validate import unrelated_sample


@dataclass(frozen=True)
class NullValidation:
    null: NullParams = field(default_factory=NullParams)
    set_size: int = 4                 # vectors in the set test (1: no set test)
    questions: str = "all"            # the concept's questions: all, or only those the intact model answers
    few_shot: bool = False            # prefix the questions with the run's few-shot text (4x the tokens)
    max_questions: int = 8            # the concept's first questions used
    min_questions: int = 2
    unrelated_size: int = 16
    alpha: float = 0.01
    correction: str = "bh"

    def check(self) -> None:
        self.null.check()
        if not 1 <= self.set_size <= 4:
            raise KgprobeError(f"set_size must be 1..4, got {self.set_size}")
        if self.max_questions < 1 or self.min_questions < 1 or self.unrelated_size < 1:
            raise KgprobeError("max_questions, min_questions and unrelated_size must be >= 1")
        if not 0 < self.alpha < 1:
            raise KgprobeError(f"alpha must be in (0, 1), got {self.alpha}")
        adjust([], method=self.correction)
        if self.questions not in ("all", "known"):
            raise KgprobeError(f"questions {self.questions!r}: expected 'all' or 'known'")


def _test_one(model, tokenizer, concept: Concept, candidates: list[tuple[int, int, float]],
              known: dict[str, list[QA]], options: NullValidation, few_shot: str) -> dict:
    # the effect is a change of log-probability: a question the model gets wrong still shows
    # whether the vector carries its answer, so by default every question counts (as in the original)
    mine = (concept.qa if options.questions == "all" else known.get(concept.id, []))[: options.max_questions]
    record = {"concept": concept.id, "name": concept.name, "n_concept": len(mine), "tests": {}}
    if len(mine) < options.min_questions:
        record["skipped"] = f"{len(mine)} {'answered ' * (options.questions == 'known')}questions < " \
                            f"{options.min_questions}"
        return record
    if not candidates:
        record["skipped"] = "no candidate vector"
        return record
    unrelated = unrelated_sample(known, concept.id, options.unrelated_size, options.null.seed)
    record["n_unrelated"] = len(unrelated)
    if not unrelated:  # the effect contrasts the two sets: without unrelated questions it is undefined
        record["skipped"] = "no answered question of another concept to serve as unrelated"
        return record
    # no few-shot prefix by default: a log-probability needs no answer format, and the prefix would
    # be most of every row's tokens (the original protocol asks its questions bare too)
    runner = InterventionRunner(model, tokenizer, mine + unrelated, few_shot=few_shot if options.few_shot else "")
    exclude = {(layer, j) for layer, j, _ in candidates}
    vectors = [(layer, j) for layer, j, _ in candidates]
    kinds = {"single": vectors[:1]}
    if options.set_size > 1 and len(vectors) > 1:
        kinds["set"] = vectors[: options.set_size]
    for kind, chosen in kinds.items():
        record["tests"][kind] = null_test(runner, chosen, n_concept=len(mine), exclude=exclude, params=options.null,
                                          key=f"{concept.id}:{kind}")
    return record


def validate_null(model, tokenizer, concepts: Sequence[Concept], candidates: dict[str, list[tuple[int, int, float]]],
                  known: dict[str, list[QA]], *, options: NullValidation = NullValidation(), few_shot: str = "",
                  log_path: str | Path | None = None, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One record per concept (see the module docstring), then every test's adjusted p-value."""
    options.check()
    log = ChunkLog(Path(log_path)) if log_path is not None else None
    records = []
    for n, concept in enumerate(concepts):
        record = log.done_for(n, key="concept", value=concept.id) if log is not None else None
        if record is None:
            record = _test_one(model, tokenizer, concept, candidates.get(concept.id, []), known, options, few_shot)
            if log is not None:
                log.write(n, record)
        records.append({k: v for k, v in record.items() if k != "chunk"})
        if progress is not None:
            tests = record.get("tests", {})
            shown = ", ".join(f"{k} effect {t['effect']:.3f} p {t['p']:.2g} ({t['draws']} draws)"
                              for k, t in tests.items())
            progress(f"[{n + 1}/{len(concepts)}] {concept.name}: {shown or record.get('skipped')}")
    tests = [(r, kind) for r in records for kind in r.get("tests", {})]
    adjusted = adjust([r["tests"][kind]["p"] for r, kind in tests], method=options.correction)
    # the Monte-Carlo p alone (no tail fit): it cannot go below 1 / (K + 1), a conservative count
    plain = adjust([r["tests"][kind]["p_monte_carlo"] for r, kind in tests], method=options.correction)
    for (r, kind), p, q in zip(tests, adjusted, plain):
        r["tests"][kind].update(p_adjusted=p, significant=p < options.alpha, p_monte_carlo_adjusted=q,
                                significant_monte_carlo=q < options.alpha)
    for r in records:
        r["beats_null"] = any(t.get("significant") for t in r.get("tests", {}).values())
        r["beats_null_monte_carlo"] = any(t.get("significant_monte_carlo") for t in r.get("tests", {}).values())
    return records


# what validate_null adds to a checkpointed record once every test is in (corrections over all tests)
ADJUSTED_TEST_KEYS = ("p_adjusted", "significant", "p_monte_carlo_adjusted", "significant_monte_carlo")
ADJUSTED_RECORD_KEYS = ("beats_null", "beats_null_monte_carlo")


def as_checkpoint(record: dict) -> dict:
    """A finished record (from a null.json) as its checkpoint line was: without the fields the
    multiple-testing correction adds, which a resumed run recomputes over all its tests."""
    return {**{k: v for k, v in record.items() if k not in ADJUSTED_RECORD_KEYS},
            "tests": {kind: {k: v for k, v in t.items() if k not in ADJUSTED_TEST_KEYS}
                      for kind, t in record.get("tests", {}).items()}}


def summarise_null(records: Sequence[dict], options: NullValidation) -> dict:
    """Counts of concepts that beat their null, per test and overall, with the settings."""
    tested = [r for r in records if r.get("tests")]
    per_kind = {kind: {"tested": sum(kind in r["tests"] for r in tested),
                       "significant": sum(r["tests"].get(kind, {}).get("significant", False) for r in tested),
                       "significant_monte_carlo": sum(r["tests"].get(kind, {}).get("significant_monte_carlo", False)
                                                      for r in tested)}
                for kind in ("single", "set")}
    return {"concepts": len(records), "tested": len(tested),
            "beat_null": sum(r["beats_null"] for r in records),
            "beat_null_monte_carlo_only": sum(r["beats_null_monte_carlo"] for r in records),
            "beat_null_concepts": [r["concept"] for r in records if r["beats_null"]],
            "per_test": per_kind,
            "skipped": {r["concept"]: r["skipped"] for r in records if r.get("skipped")},
            "beat_every_draw": _beat_every_draw(tested, options.null.null_size),
            "beat_null_by_position": _by_position(records),
            "settings": {**asdict(options), "null": asdict(options.null)}}


def _beat_every_draw(tested: Sequence[dict], null_size: int) -> dict:
    """Concepts (and tests) whose effect beat all ``null_size`` draws. Only these can pass a strict
    threshold: one draw at or above the effect puts the Monte-Carlo p at 2 / (K + 1) or more, and
    the tail fit near that order too, so this count bounds what more draws of the same null find."""
    tests = [(r, t) for r in tested for t in r["tests"].values() if t["draws"] >= null_size and t["exceed"] == 0]
    return {"tests": len(tests), "concepts": len({r["concept"] for r, _ in tests})}


def _by_position(records: Sequence[dict], *, width: int = 100) -> list[dict]:
    """Concepts beating their null per ``width`` of the list (discovery's order: best columns
    first), to show how the rate falls down the list."""
    return [{"from": i + 1, "to": min(i + width, len(records)),
             "tested": sum(bool(r.get("tests")) for r in records[i: i + width]),
             "beat_null": sum(r["beats_null"] for r in records[i: i + width])}
            for i in range(0, len(records), width)]


def plot_nulls(records: Sequence[dict], path: Path, *, title: str = "", panels: int = 12) -> None:
    """Null distributions (histograms) with each candidate's effect marked, most significant
    concepts first, and the histogram of all tests' p-values."""
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    tests = sorted(((t["p"], r["name"], kind, t) for r in records for kind, t in r.get("tests", {}).items()),
                   key=lambda x: (x[0], x[1], x[2]))[:panels]
    cols = 4
    rows = max(1, -(-(len(tests) + 1) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (p, name, kind, t) in zip(axes.flat, tests):
        ax.hist(t["null"], bins=30, color="#9ab", edgecolor="none")
        ax.axvline(t["effect"], color="#c33", linewidth=1.5)
        ax.set_title(f"{name} ({kind}): p={p:.2g}", fontsize=8)
        ax.tick_params(labelsize=7)
    ax = axes.flat[len(tests)]
    ax.hist([t["p"] for r in records for t in r.get("tests", {}).values()], bins=20, range=(0, 1), color="#555")
    ax.set_title("p-values of all tests", fontsize=8)
    for extra in list(axes.flat)[len(tests) + 1:]:
        extra.axis("off")
    fig.suptitle(title or "effect of the candidate (red) against norm-matched random vectors", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
