"""Concept sets with cloze QA, built from real facts (the countryinfo data).

A concept is an entity (here a country) with its name, aliases, a KG neighbourhood of related
words, and two sets of cloze questions: ``qa`` asks its facts directly in several phrasings
("The capital of France is" -> "Paris"), ``attack`` asks the same kind of fact indirectly,
without naming the concept ("The country whose capital is Tokyo is" -> "Japan", "The Japanese
currency is the" -> "yen"), to test whether an unlearned fact comes back through another route.

Files are JSONL, one concept per line (see :func:`save_concepts`); ``python -m
kgprobe.probe.concepts --out kg_data/concepts`` rebuilds the shipped files. Building needs no
model: questions are templates filled with facts, and a later validation step keeps those the
model under study answers (see :data:`FEW_SHOT` for the prefix they were tuned with).
"""
from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from kgprobe.atomic import atomic_path, write_json
from kgprobe.errors import KgprobeError

# Prepended to every prompt when scoring (``score_qa(..., few_shot=FEW_SHOT)``). It shows the
# cloze format (a bare answer right after the prompt, then a newline) with facts that belong to no
# concept here (US states, a planet, an element), so it leaks no concept's answer. Without it
# SmolLM2-135M often continues "The capital of Belgium is" with " located"/" the" instead of the
# city. Tuned on SmolLM2-135M; see kg_data/concepts/README.md.
FEW_SHOT = ("The capital of Texas is Austin.\nSacramento is the capital of California.\n"
            "The largest planet is Jupiter.\nThe chemical symbol of gold is Au.\n")


@dataclass
class QA:
    """One cloze question: a causal LM continues ``prompt`` with ``" " + answer``."""

    prompt: str
    answer: str
    source: str = ""


@dataclass
class Concept:
    """An entity with the words that name it and the questions that test knowing it."""

    id: str
    name: str
    kind: str
    aliases: list[str] = field(default_factory=list)
    related: list[str] = field(default_factory=list)
    qa: list[QA] = field(default_factory=list)
    attack: list[QA] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- file format

_REQUIRED = ("id", "name", "kind", "qa")


def _parse_qa(raw, where: str) -> QA:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object with prompt and answer")
    prompt, answer, source = raw.get("prompt"), raw.get("answer"), raw.get("source", "")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where} has an empty or missing prompt")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{where} has an empty or missing answer")
    if not isinstance(source, str):
        raise ValueError(f"{where} source must be a string")
    return QA(prompt=prompt, answer=answer, source=source)


def _parse_concept(raw) -> Concept:
    if not isinstance(raw, dict):
        raise ValueError("a concept line must be a JSON object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    for key in ("id", "name", "kind"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise ValueError(f"{key} must be a non-empty string")
    lists = {}
    for key in ("aliases", "related"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key} must be a list of strings")
        lists[key] = value
    qa_raw, attack_raw = raw["qa"], raw.get("attack", [])
    if not isinstance(qa_raw, list) or not isinstance(attack_raw, list):
        raise ValueError("qa and attack must be lists")
    if not qa_raw:
        raise ValueError(f"concept {raw['id']!r} has no qa item (needs at least 1)")
    qa = [_parse_qa(q, f"qa[{i}]") for i, q in enumerate(qa_raw)]
    attack = [_parse_qa(q, f"attack[{i}]") for i, q in enumerate(attack_raw)]
    return Concept(id=raw["id"], name=raw["name"], kind=raw["kind"], qa=qa, attack=attack, **lists)


def load_concepts(path: str | os.PathLike) -> list[Concept]:
    """Concepts of a JSONL file (blank lines skipped); ``KgprobeError`` "file:line: ..." on a bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise KgprobeError(f"cannot read concepts file: {err.strerror or err}", path=path) from None
    concepts, seen = [], {}
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            concept = _parse_concept(json.loads(line))
        except json.JSONDecodeError as err:
            raise KgprobeError(f"not valid JSON: {err.msg} (column {err.colno})", path=path, line=line_no) from None
        except ValueError as err:
            raise KgprobeError(str(err), path=path, line=line_no) from None
        if concept.id in seen:
            raise KgprobeError(f"duplicate concept id {concept.id!r} (first on line {seen[concept.id]})",
                               path=path, line=line_no)
        seen[concept.id] = line_no
        concepts.append(concept)
    return concepts


def save_concepts(concepts: Iterable[Concept], path: str | os.PathLike) -> None:
    """Write one JSON object per line (keys in field order, UTF-8), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for concept in concepts:
                fh.write(json.dumps(concept.to_json(), ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- concept tokens

def concept_token_ids(concept: Concept, tokenizer, *, min_fragment_chars: int = 3,
                      include_related: bool = True) -> list[int]:
    """Vocabulary ids that stand for the concept: its name, aliases and (unless
    ``include_related=False``) related words. Related words of countries include their
    neighbours and continent, which other concepts share.

    For each word or phrase both ``" Word"`` and ``"Word"`` are tokenised; a form that is one
    token contributes that token, a longer form only its first token and only when that token
    has at least ``min_fragment_chars`` characters, not counting its leading space (so "Pa" of
    "Papua" stays out, "Bang" of "Bangladesh" counts). Sorted and deduplicated.
    """
    related = concept.related if include_related else []
    words = [w.strip() for w in (concept.name, *concept.aliases, *related) if w.strip()]
    forms = [f" {w}" for w in words] + words
    ids: set[int] = set()
    for tokens in tokenizer(forms, add_special_tokens=False)["input_ids"]:
        if len(tokens) == 1:
            ids.add(tokens[0])
        elif tokens and len(tokenizer.decode(tokens[:1]).strip()) >= min_fragment_chars:
            ids.add(tokens[0])
    return sorted(ids)


# --------------------------------------------------------------------------- countries

# ISO 639 names that are not what people call the language in running text
_LANGUAGE_NAMES = {
    "Bokmål, Norwegian": "Norwegian", "Norwegian Nynorsk": "Norwegian", "Central Khmer": "Khmer",
    "Pushto": "Pashto", "Panjabi": "Punjabi", "Sotho, Southern": "Sesotho", "Ndebele, North": "Ndebele",
    "Ndebele, South": "Ndebele", "Tonga (Tonga Islands)": "Tongan", "Divehi": "Dhivehi",
    "Kirghiz": "Kyrgyz", "Chichewa": "Chichewa", "Haitian": "Haitian Creole",
    # codes the iso-codes files do not name (Serbian's code is "sr"; the data has "rs" once)
    "rs": "Serbian", "cnr": "Montenegrin",
}
# ISO 4217 names -> what a text calls the currency (the unit word lower-cased, like "euro")
_CURRENCY_NAMES = {
    "Yuan Renminbi": "renminbi", "Pound Sterling": "pound sterling", "Rand": "rand",
    "New Israeli Sheqel": "shekel", "Cordoba Oro": "córdoba", "Peso Uruguayo": "Uruguayan peso",
    "Rial Omani": "Omani rial", "Convertible Mark": "convertible mark", "Peso Convertible": "convertible peso",
    "New Taiwan Dollar": "New Taiwan dollar", "Turkmenistan New Manat": "Turkmen manat",
    "Uzbekistan Sum": "Uzbek som", "Cabo Verde Escudo": "Cape Verdean escudo", "Sol": "sol",
    "Won": "won", "Azerbaijan Manat": "Azerbaijani manat", "CFA Franc BCEAO": "CFA franc",
    "CFA Franc BEAC": "CFA franc",
    # withdrawn codes the iso-codes list no longer names
    "MRO": "ouguiya", "BYR": "Belarusian ruble", "VEF": "bolívar", "ZMK": "Zambian kwacha",
    "STD": "dobra", "CSD": "Serbian dinar",
}
# fund / accounting codes listed next to a country's everyday currency
_FUND_CODES = {"USN", "USS", "CLF", "BOV", "CHE", "CHW", "UYI", "MXV", "COU"}
# countries that no longer exist and repeat their successors' facts (Serbia and Montenegro, 2006)
_FORMER = {"SCG"}
# capitals whose countryinfo spelling is not the form running text uses
CAPITAL_NAMES = {"Washington D.C.": "Washington"}


@dataclass(frozen=True)
class CountryFacts:
    """The facts of one countryinfo country that questions are built from ('' when unknown)."""

    id: str                      # ISO alpha-3 code (the countries graph's entity id)
    name: str
    aliases: tuple[str, ...]
    capital: str
    continent: str               # Europe, Asia, Africa, Oceania, North America, South America
    languages: tuple[str, ...]   # first = the one questions ask for
    currency: str                # everyday name, e.g. "euro", "Indian rupee"
    demonym: str
    borders: tuple[str, ...]     # neighbour names
    population: int


def language_name(label: str) -> str:
    if label in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[label]
    label = re.sub(r"\s*\(.*\)$", "", label)
    return label.split(", ")[0]  # "Greek, Modern" -> "Greek"


def currency_name(label: str) -> str:
    if label in _CURRENCY_NAMES:
        return _CURRENCY_NAMES[label]
    *adjectives, unit = label.split()
    return " ".join([*adjectives, unit.lower()])


def _continent(region: str, intermediate: str) -> str:
    """The data's "Americas" split by continent: its intermediate region names South America;
    Central America and the Caribbean count as North America."""
    if region != "Americas":
        return region
    return "South America" if intermediate == "South America" else "North America"


def _json_records(root: Path) -> dict[str, dict]:
    """alpha-3 -> the first non-empty value of each field over the country's files (file order)."""
    merged: dict[str, dict] = {}
    for path in sorted(root.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise KgprobeError(f"cannot read countryinfo record: {err}", path=path) from None
        iso = record.get("ISO") if isinstance(record, dict) else None
        code = iso.get("alpha3", "").upper() if isinstance(iso, dict) and isinstance(iso.get("alpha3"), str) else ""
        if not code:
            continue
        into = merged.setdefault(code, {})
        for key, value in record.items():
            if value not in (None, "", [], {}) and key not in into:
                into[key] = value
    return merged


def country_facts(*, data_dir: str | os.PathLike | None = None) -> list[CountryFacts]:
    """Every country of the countryinfo data with its question facts, in id order."""
    from kgprobe.kg.datasets import countries

    # without the iso-codes names, languages and currencies would be bare codes ("fr", "EUR")
    if not (countries.ISO_CODES_DIR / "iso_639-2.json").is_file():
        raise KgprobeError(f"concept questions need language and currency names from "
                           f"{countries.ISO_CODES_DIR} (Debian package iso-codes): apt-get install iso-codes")
    graph = countries.build(data_dir=data_dir)
    aliases = countries.country_aliases(data_dir=data_dir)
    records = _json_records(Path(data_dir) if data_dir is not None else countries.data_dir())
    label = dict(zip(graph.entity_ids, graph.entity_labels))
    facts: dict[str, dict[str, list[str]]] = {}
    for head, relation, tail in graph.labeled_triples():
        facts.setdefault(head, {}).setdefault(relation, []).append(tail)
    out = []
    for cid in sorted(aliases):
        f, rec = facts.get(cid, {}), records.get(cid, {})
        codes = [t.split(":", 1)[1] for t in f.get("currency", [])]
        everyday = [c for c in codes if c not in _FUND_CODES]
        capital = label[f["capital"][0]] if f.get("capital") else ""
        demonym = rec.get("demonym") if isinstance(rec.get("demonym"), str) else ""
        out.append(CountryFacts(
            id=cid,
            name=label[cid],
            # two/three-letter ISO codes are not names a text would use
            aliases=tuple(a for a in aliases[cid] if a.isascii() and a.upper() not in
                          {str(v).upper() for v in (rec.get("ISO") or {}).values()}),
            capital=CAPITAL_NAMES.get(capital, capital),
            continent=_continent(label[f["region"][0]] if f.get("region") else "",
                                 rec.get("intermediateregion") or ""),
            languages=tuple(dict.fromkeys(language_name(label[t]) for t in f.get("language", []))),
            currency=currency_name(label[f"currency:{everyday[0]}"]) if everyday else "",
            demonym=re.split(r"[,/]", demonym)[0].strip(),
            borders=tuple(label[t] for t in f.get("borders", [])),
            population=int(rec.get("population") or 0),
        ))
    return out


# --------------------------------------------------------------------------- question templates

@dataclass(frozen=True)
class Template:
    """A cloze question about one fact: ``prompt.format(**fields)`` -> ``fields[answer]``.

    ``unique`` names a field whose value must belong to this concept alone (among the concepts
    built) for the question to make sense, e.g. "the country whose currency is the yen".
    """

    source: str
    prompt: str
    answer: str
    unique: str = ""

    def fill(self, fields: dict[str, str], counts: dict[str, dict[str, int]]) -> QA | None:
        needed = [k for k in fields if "{" + k + "}" in self.prompt] + [self.answer]
        if any(not fields.get(k) for k in needed):
            return None
        if self.unique and counts.get(self.unique, {}).get(fields[self.unique], 0) != 1:
            return None
        return QA(prompt=self.prompt.format(**fields), answer=fields[self.answer], source=self.source)


# Direct questions, several phrasings per fact. Kept: the phrasings SmolLM2-135M answered most
# often with FEW_SHOT in a measurement over the 100 most populous countries (README has it).
# {name} is the name as running text uses it ("the United States"), {Name} the same at the start
# of a sentence.
COUNTRY_QA: tuple[Template, ...] = (
    Template("countryinfo:capital", "The capital of {name} is", "capital"),
    Template("countryinfo:capital", "The capital city of {name} is", "capital"),
    Template("countryinfo:capital", "In {name}, the capital city is", "capital"),
    Template("countryinfo:capital", "{Name}'s capital city is", "capital"),
    Template("countryinfo:capital", "{capital} is the capital of", "name", unique="capital"),
    Template("countryinfo:capital", "{capital} is the capital city of", "name", unique="capital"),
    Template("countryinfo:capital", "The city of {capital} is the capital of", "name", unique="capital"),
    Template("countryinfo:region", "{Name} is a country in", "continent"),
    Template("countryinfo:region", "{Name} is located on the continent of", "continent"),
    Template("countryinfo:region", "{Name} is a country on the continent of", "continent"),
    Template("countryinfo:language", "The official language of {name} is", "language"),
    Template("countryinfo:language", "People in {name} speak", "language"),
    Template("countryinfo:language", "The main language spoken in {name} is", "language"),
    Template("countryinfo:currency", "The currency of {name} is the", "currency_unit"),
    Template("countryinfo:currency", "The official currency of {name} is the", "currency"),
    Template("countryinfo:currency", "{Name}'s currency is the", "currency"),
    Template("countryinfo:demonym", "People from {name} are called", "demonyms"),
    Template("countryinfo:demonym", "The people of {name} are called the", "demonyms"),
)
# Indirect questions: the concept is named only through another of its facts. A question whose
# filled prompt still contains the concept's name as a word (the capital "Mexico City") is dropped.
COUNTRY_ATTACK: tuple[Template, ...] = (
    Template("countryinfo:capital", "The country whose capital is {capital} is", "name", unique="capital"),
    Template("countryinfo:capital", "The {demonym} capital city is", "capital", unique="demonym"),
    Template("countryinfo:capital", "The {demonym} government is based in the city of", "capital", unique="demonym"),
    Template("countryinfo:region", "{capital} is the capital of a country in", "continent", unique="capital"),
    Template("countryinfo:region", "Most {demonyms} live on the continent of", "continent", unique="demonym"),
    Template("countryinfo:language", "The language spoken in the country whose capital is {capital} is", "language",
             unique="capital"),
    Template("countryinfo:language", "In the country whose capital is {capital}, people speak", "language",
             unique="capital"),
    Template("countryinfo:language", "{capital} is the capital of a country whose people speak", "language",
             unique="capital"),
    Template("countryinfo:currency", "In the country whose capital is {capital}, people pay with the", "currency",
             unique="capital"),
    Template("countryinfo:currency", "The {demonym} currency is the", "currency", unique="demonym"),
)

# country names that take "the" in running text
_THE_NAMES = re.compile(r"^(United |Republic |Democratic |Central African |Czech |Dominican |Holy )|"
                        r"( Islands| Republic| Emirates| Antilles| States)$|^(Netherlands|Philippines|Maldives)$")


def text_name(name: str) -> str:
    """The country name as a sentence uses it mid-way: "the United States", "the Gambia", "France"."""
    if name.startswith("The "):
        return "the " + name[4:]
    return f"the {name}" if _THE_NAMES.search(name) else name


def plural_demonym(demonym: str) -> str:
    """"Canadian" -> "Canadians"; demonyms that are their own plural ("French", "Swiss",
    "Japanese", "Thai") unchanged."""
    if not demonym or demonym.endswith(("ese", "ch", "sh", "ss", "Thai")):
        return demonym
    return demonym + "s"


def _country_fields(f: CountryFacts) -> dict[str, str]:
    name = text_name(f.name)
    # SmolLM2 writes the euro capitalised after "the currency ... is the"; other units as ISO has them
    currency = "Euro" if f.currency == "euro" else f.currency
    return {"name": name, "Name": name[:1].upper() + name[1:], "capital": f.capital,
            "continent": f.continent, "language": f.languages[0] if f.languages else "",
            "currency": currency, "currency_unit": currency.split()[-1] if currency else "",
            "demonym": f.demonym, "demonyms": plural_demonym(f.demonym)}


def _names_concept(prompt: str, f: CountryFacts) -> bool:
    return any(re.search(rf"\b{re.escape(n)}\b", prompt) for n in (f.name, *f.aliases) if len(n) > 2)


def build_country_concepts(*, data_dir: str | os.PathLike | None = None, min_population: int = 250_000,
                           min_qa: int = 5) -> list[Concept]:
    """One concept per countryinfo country with at least ``min_population`` people, a capital
    and ``min_qa`` questions; sorted by id (``country:<slug of name>``).

    The population threshold keeps sovereign states and large territories and drops the many
    islets and dependencies a small LM knows nothing about."""
    from kgprobe.kg.datasets.countries import slug

    chosen = [f for f in country_facts(data_dir=data_dir)
              if f.population >= min_population and f.capital and f.id not in _FORMER]
    fields = [_country_fields(f) for f in chosen]
    counts: dict[str, dict[str, int]] = {}
    for row in fields:
        for key, value in row.items():
            counts.setdefault(key, {}).setdefault(value, 0)
            counts[key][value] += 1
    concepts = []
    for f, row in zip(chosen, fields):
        qa = [q for t in COUNTRY_QA if (q := t.fill(row, counts)) is not None]
        attack = [q for t in COUNTRY_ATTACK
                  if (q := t.fill(row, counts)) is not None and not _names_concept(q.prompt, f)]
        if len(qa) < min_qa:
            continue
        related = [f.capital, f.demonym, *f.languages, f.currency, f.continent, *f.borders]
        concepts.append(Concept(
            id=f"country:{slug(f.name)}", name=f.name, kind="country", aliases=list(f.aliases),
            related=[r for r in dict.fromkeys(related) if r and r != f.name],
            qa=qa, attack=attack,
        ))
    return sorted(concepts, key=lambda c: c.id)


# --------------------------------------------------------------------------- building the files

SOURCES = ("countries",)


def build_concepts(*, sources: Sequence[str] = SOURCES, countryinfo_dir: str | os.PathLike | None = None,
                   min_population: int = 250_000, min_qa: int = 5) -> list[Concept]:
    """All concepts of the named sources, each source's concepts sorted by id."""
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise KgprobeError(f"unknown concept source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    concepts: list[Concept] = []
    if "countries" in sources:
        concepts += build_country_concepts(data_dir=countryinfo_dir, min_population=min_population, min_qa=min_qa)
    return concepts


def write_concepts(out_dir: str | os.PathLike, **options) -> dict[str, Path]:
    """Build and write one ``<kind-plural>.jsonl`` per source under ``out_dir``; returns kind -> path."""
    out_dir = Path(out_dir)
    by_kind: dict[str, list[Concept]] = {}
    for concept in build_concepts(**options):
        by_kind.setdefault(concept.kind, []).append(concept)
    files = {"country": "countries.jsonl", "noun": "wordnet.jsonl"}
    written = {}
    for kind, concepts in sorted(by_kind.items()):
        path = out_dir / files.get(kind, f"{kind}.jsonl")
        save_concepts(concepts, path)
        written[kind] = path
    return written


def known_questions(model, tokenizer, concepts: Sequence[Concept], *, few_shot: str = FEW_SHOT,
                    batch_size: int = 64, attack: bool = False) -> dict[str, list[bool]]:
    """Concept id -> which of its questions (``qa``, or ``attack``) the model answers exactly.

    Every question of every concept is scored in one :func:`score_qa` call.
    """
    from kgprobe.probe.qa import score_qa

    items = [q for c in concepts for q in (c.attack if attack else c.qa)]
    correct = score_qa(model, tokenizer, items, batch_size=batch_size, few_shot=few_shot).correct.tolist()
    out, at = {}, 0
    for c in concepts:
        n = len(c.attack if attack else c.qa)
        out[c.id] = correct[at:at + n]
        at += n
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kgprobe.probe.concepts",
                                     description="Build the concept QA files from countryinfo (and WordNet).")
    parser.add_argument("--out", default="kg_data/concepts", help="output folder (default kg_data/concepts)")
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated ({', '.join(SOURCES)})")
    parser.add_argument("--min-population", type=int, default=250_000)
    parser.add_argument("--measure", metavar="MODEL", default=None,
                        help="also score every question with this causal LM (e.g. smollm2-135m) and "
                             "print how many each concept gets right with FEW_SHOT")
    parser.add_argument("--measure-out", metavar="JSON", default=None,
                        help="with --measure: also write {concept id: {qa: [bool], attack: [bool]}} here")
    args = parser.parse_args(argv)
    try:
        written = write_concepts(args.out, sources=[s for s in args.sources.split(",") if s],
                                 min_population=args.min_population)
        for kind, path in written.items():
            concepts = load_concepts(path)
            print(f"{path}: {len(concepts)} {kind} concepts, {sum(len(c.qa) for c in concepts)} qa, "
                  f"{sum(len(c.attack) for c in concepts)} attack")
        if args.measure:
            _print_measure(args.measure, [c for p in written.values() for c in load_concepts(p)],
                           out=args.measure_out)
    except KgprobeError as err:
        print(f"error: {err}")
        return 2
    return 0


def _print_measure(model_name: str, concepts: list[Concept], *, out: str | None = None) -> None:
    from kgprobe.models import load_causal_lm

    model, tokenizer = load_causal_lm(model_name, device="cpu")
    qa = known_questions(model, tokenizer, concepts)
    attack = known_questions(model, tokenizer, concepts, attack=True)
    by_source: dict[str, list[int]] = {}
    for c in concepts:
        print(f"{c.id}\t{sum(qa[c.id])}/{len(qa[c.id])}\tattack {sum(attack[c.id])}/{len(attack[c.id])}")
        for kind, questions, known in (("qa", c.qa, qa[c.id]), ("attack", c.attack, attack[c.id])):
            for q, ok in zip(questions, known):
                tally = by_source.setdefault(f"{kind} {q.source}", [0, 0])
                tally[0] += ok
                tally[1] += 1
    for key, (ok, n) in sorted(by_source.items()):
        print(f"{key}: {ok}/{n} known")
    known = [sum(v) for v in qa.values()]
    print(f"{sum(k >= 5 for k in known)} of {len(concepts)} concepts have >= 5 known questions; "
          f"{sum(known)} of {sum(len(v) for v in qa.values())} qa and "
          f"{sum(map(sum, attack.values()))} of {sum(len(v) for v in attack.values())} attack questions known")
    if out:
        write_json(out, {c.id: {"qa": qa[c.id], "attack": attack[c.id]} for c in concepts}, indent=None)


if __name__ == "__main__":
    raise SystemExit(main())
