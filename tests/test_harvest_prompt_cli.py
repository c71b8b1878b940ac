"""A relation from the command line: ``kgprobe harvest --prompt ... --seed "A|B" ...`` (no file)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kgprobe.cli import main
from kgprobe.harvest.relation import load_relation, relation_file, relation_from_options

PROMPT = "<ENT0> is the capital of <ENT1> ."
SEEDS = ["paris|france", "tokyo|japan", "lima|peru"]


def _run(args: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_a_relation_from_the_command_line_runs_and_becomes_a_relation_file(bert_dir, tmp_path, capsys):
    args = ["harvest", "--prompt", PROMPT, "--prompt", "the capital of <ENT1> is <ENT0> .", "--name", "capital",
            "--model", bert_dir, "--device", "cpu", "--top-k", "3", "--first-candidates", "4", "--seed", "7",
            "--no-infer-types"]  # a random model's candidates are no WordNet words
    for seed in SEEDS:
        args += ["--seed", seed]
    code, out, err = _run(args + ["--out", tmp_path / "run"], capsys)
    assert code == 0, err
    written = load_relation(tmp_path / "run" / "relation.yaml")  # the equivalent relation file
    assert written.name == "capital" and written.prompts == [PROMPT, "the capital of <ENT1> is <ENT0> ."]
    assert written.seeds == (("paris", "france"), ("tokyo", "japan"), ("lima", "peru"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["seed"] == 7
    rows = [json.loads(line) for line in (tmp_path / "run" / "tuples.jsonl").read_text().splitlines()]
    assert 1 <= len(rows) <= 3
    # the file the run wrote gives the same run as the command line did
    code, out, err = _run(["harvest", tmp_path / "run" / "relation.yaml", "--model", bert_dir, "--device", "cpu",
                           "--top-k", "3", "--first-candidates", "4", "--seed", "7", "--no-infer-types",
                           "--out", tmp_path / "again"],
                          capsys)
    assert code == 0, err
    assert (tmp_path / "again" / "tuples.jsonl").read_text() == (tmp_path / "run" / "tuples.jsonl").read_text()


def test_relation_file_round_trips_a_written_relation(tmp_path):
    import yaml

    rel = load_relation(Path(__file__).resolve().parent.parent / "kg_data" / "relations" / "capital_of.yaml")
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(relation_file(rel), sort_keys=False))
    again = load_relation(path)
    assert (again.name, again.prompts, again.seeds, again.constraints, again.reference) == \
        (rel.name, rel.prompts, rel.seeds, rel.constraints, rel.reference)


@pytest.mark.parametrize("prompts, seeds, line", [
    ([], SEEDS, "--prompt: give at least one prompt"),
    (["<ENT0> is the capital of ."], SEEDS, "--prompt '<ENT0> is the capital of .': slot <ENT1> is missing"),
    ([PROMPT], ["paris|france"], "--seed: harvesting needs at least two seed tuples"),
    ([PROMPT], ["paris|france", "tokyo|japan|asia"], "--seed 'tokyo|japan|asia': 3 entities, the first seed has 2"),
    ([PROMPT], ["paris|france", "tokyo| "], "--seed 'tokyo| ': an empty entity"),
    ([PROMPT], ["paris|france", "paris | france"], "--seed 'paris | france': given twice"),
])
def test_bad_relations_on_the_command_line_are_one_line_exit_2(prompts, seeds, line, tmp_path, capsys):
    from kgprobe.errors import KgprobeError

    with pytest.raises(KgprobeError, match="^" + line.replace("|", r"\|").replace(".", r"\.").replace("(", r"\(")):
        relation_from_options(prompts, seeds)
    args = ["harvest", "--out", tmp_path / "x"]
    for p in prompts:
        args += ["--prompt", p]
    for s in seeds:
        args += ["--seed", s]
    code, out, err = _run(args, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and line in err
    assert not (tmp_path / "x").exists()


def test_prompt_and_relation_files_together_or_neither_is_an_error(tmp_path, capsys):
    code, _, err = _run(["harvest", "kg_data/relations/capital_of.yaml", "--prompt", PROMPT, "--seed", SEEDS[0],
                         "--seed", SEEDS[1], "--out", tmp_path / "x"], capsys)
    assert code == 2 and "not both" in err
    code, _, err = _run(["harvest", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "give a relation file or folder" in err and err.count("\n") == 1
    code, _, err = _run(["harvest", "--prompt", PROMPT, "--seed", "paris|france", "--seed", "tokyo",
                         "--out", tmp_path / "x"], capsys)
    assert code == 2 and "'tokyo' is neither the random seed" in err
