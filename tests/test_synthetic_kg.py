"""The seeded synthetic KG generator and its ``synthetic-*`` datasets."""
from __future__ import annotations

import filecmp

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.datasets import DATASETS, build_dataset
from kgprobe.kg.datasets.synthetic import SIZES, synthetic_kg
from kgprobe.kg.formats import load_kg, save_kg


@pytest.fixture(scope="module")
def kg10k():
    return build_dataset("synthetic-10k")


def _degrees(kg) -> torch.Tensor:
    return torch.bincount(kg.triples[:, [0, 2]].reshape(-1), minlength=kg.num_entities)


def test_same_seed_same_graph_other_seed_other_graph(kg10k):
    again = synthetic_kg(10_000, seed=0, name="synthetic-10k")
    assert again.same_as(kg10k)
    assert torch.equal(again.triples, kg10k.triples)
    assert again.entity_labels == kg10k.entity_labels
    assert again.entity_descriptions == kg10k.entity_descriptions
    assert again.relation_labels == kg10k.relation_labels
    other = synthetic_kg(10_000, seed=1)
    assert other.num_triples == kg10k.num_triples
    assert not torch.equal(other.triples, kg10k.triples)
    assert other.entity_labels != kg10k.entity_labels
    assert other.entity_descriptions != kg10k.entity_descriptions


def test_saved_directories_are_byte_identical(tmp_path):
    a = save_kg(synthetic_kg(2_000, seed=3), tmp_path / "a")
    b = save_kg(synthetic_kg(2_000, seed=3), tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors


@pytest.mark.parametrize("n, per_entity, relations", [(10_000, 4.5, 50), (3_000, 2.0, 7), (500, 10.0, 3)])
def test_sizes(n, per_entity, relations):
    kg = synthetic_kg(n, num_relations=relations, triples_per_entity=per_entity, seed=5)
    assert kg.num_entities == n and kg.num_relations == relations
    assert abs(kg.num_triples - per_entity * n) <= 0.1 * per_entity * n
    assert len(kg.entity_labels) == len(kg.entity_descriptions) == n


def test_no_duplicates_no_self_loops_no_isolated_entities(kg10k):
    t = kg10k.triples
    assert len(torch.unique(t, dim=0)) == len(t)
    assert not (t[:, 0] == t[:, 2]).any()
    assert (_degrees(kg10k) > 0).all()
    # Sorted by (head, relation, tail): a canonical order.
    assert torch.equal(t, torch.unique(t, dim=0))


def test_heavy_tailed_degrees_and_relations(kg10k):
    deg = _degrees(kg10k).float()
    assert deg.max() > 20 * deg.mean()
    # Most entities are rare: the median degree is below the mean.
    assert deg.median() < deg.mean()
    per_relation = torch.bincount(kg10k.triples[:, 1], minlength=kg10k.num_relations).float()
    assert per_relation.max() > 10 * per_relation.min()
    assert (per_relation > 0).all()


def test_ids_and_text(kg10k):
    assert kg10k.entity_ids[:2] == ("E0000000", "E0000001") and kg10k.entity_ids[-1] == "E0009999"
    assert kg10k.relation_ids[0] == "R000" and kg10k.relation_ids[-1] == "R049"
    assert len(set(kg10k.entity_labels)) == kg10k.num_entities
    assert len(set(kg10k.relation_labels)) == kg10k.num_relations
    for label, desc in zip(kg10k.entity_labels[:50], kg10k.entity_descriptions[:50]):
        words = label.split(" ")
        assert len(words) == 2 and all(w.isalpha() and w[0].isupper() for w in words)
        assert desc.startswith(f"{label} is a") and desc.endswith(".")
    assert kg10k.name == "synthetic-10k"


def test_less_than_one_triple_per_entity_keeps_every_entity_connected():
    kg = synthetic_kg(1_000, triples_per_entity=0.2, seed=2)
    assert (_degrees(kg) > 0).all()
    assert kg.num_triples <= 1_000


def test_bad_arguments():
    with pytest.raises(KgprobeError):
        synthetic_kg(1)
    with pytest.raises(KgprobeError):
        synthetic_kg(100, num_relations=0)
    with pytest.raises(KgprobeError):
        synthetic_kg(100, triples_per_entity=-1)


def test_registered_and_always_available():
    for name, n in SIZES.items():
        assert name in DATASETS and DATASETS[name].available() is None
        assert f"{n:,} entities" in DATASETS[name].description
    assert set(SIZES) >= {"synthetic-10k", "synthetic-100k", "synthetic-1m"}
    kg = build_dataset("synthetic-10k", seed=4, num_relations=5)
    assert kg.num_relations == 5 and kg.name == "synthetic-10k"


def test_scale_100k_is_linear_in_size():
    kg = build_dataset("synthetic-100k")
    assert kg.num_entities == 100_000
    assert abs(kg.num_triples - 450_000) <= 45_000
    deg = _degrees(kg).float()
    assert deg.max() > 20 * deg.mean() and (deg > 0).all()


def test_cli_data_build_writes_a_loadable_kg(tmp_path, kg10k):
    from kgprobe.cli import main

    out = tmp_path / "syn"
    with pytest.raises(SystemExit) as exc:
        main(["data", "build", "synthetic-10k", "--out", str(out), "--quiet"])
    assert exc.value.code == 0
    loaded = load_kg(out, progress=False)
    assert loaded.entity_ids == kg10k.entity_ids
    assert torch.equal(loaded.triples, kg10k.triples)
    assert loaded.entity_labels == kg10k.entity_labels
    assert loaded.entity_descriptions == kg10k.entity_descriptions


def test_cli_data_list_shows_the_synthetic_datasets(capsys):
    from kgprobe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["data", "list"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in printed if line and not line[0].isspace()]
    assert names[names.index("synthetic-10k"):][:4] == ["synthetic-10k", "synthetic-100k", "synthetic-1m",
                                                        "synthetic-5m"]
    assert len({line.index(" yes ") for line in printed if " yes " in line}) == 1  # one column
