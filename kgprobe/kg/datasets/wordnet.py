"""WordNet 3.0 as a knowledge graph with the WN18RR entity ids and relations.

Reads the four ``data.{noun,verb,adj,adv}`` files of a WordNet 3.0 install (Debian's
``wordnet-base``) directly, so no NLTK download is needed. Every synset becomes an entity whose
id is its 8-digit byte offset (the ids WN18RR uses, e.g. ``02084071`` = dog), its label the
synset's lemmas and its description the gloss. Only the 11 pointer types kept in WN18RR become
relations, under their WN18RR names, so models and results can be compared with that benchmark.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator, NamedTuple

import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

DEFAULT_DIR = "/usr/share/wordnet"
ENV_VAR = "KGPROBE_WORDNET_DIR"

# File order matters: it decides which of two synsets sharing an offset keeps the plain id.
POS_FILES: tuple[tuple[str, str], ...] = (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv"))

# WordNet pointer symbol -> (WN18RR relation id, readable label). WordNet's own docs (wndb(5WN)
# and the data: ``$`` occurs only in data.verb) make ``$`` the verb group and ``^`` also-see.
POINTERS: dict[str, tuple[str, str]] = {
    "@": ("_hypernym", "hypernym"),
    "@i": ("_instance_hypernym", "instance hypernym"),
    "%m": ("_member_meronym", "member meronym"),
    "%p": ("_has_part", "has part"),
    "+": ("_derivationally_related_form", "derivationally related form"),
    ";c": ("_synset_domain_topic_of", "synset domain topic of"),
    ";u": ("_member_of_domain_usage", "member of domain usage"),
    ";r": ("_member_of_domain_region", "member of domain region"),
    "$": ("_verb_group", "verb group"),
    "^": ("_also_see", "also see"),
    "&": ("_similar_to", "similar to"),
}

# Adjectives in data.adj may carry a syntactic marker such as ``galore(ip)``; it is not part
# of the word.
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def resolve_dir(path: str | os.PathLike | None = None) -> Path:
    """The WordNet directory: ``path``, else ``$KGPROBE_WORDNET_DIR``, else /usr/share/wordnet."""
    return Path(path or os.environ.get(ENV_VAR) or DEFAULT_DIR)


def available(path: str | os.PathLike | None = None) -> str | None:
    """None when all four data files exist, else a one-line hint on how to get them."""
    root = resolve_dir(path)
    missing = [name for _, name in POS_FILES if not (root / f"data.{name}").is_file()]
    if not missing:
        return None
    return (f"WordNet 3.0 not found at {root} (missing data.{', data.'.join(missing)}): "
            f"run `apt-get install wordnet-base` (as root) or set {ENV_VAR}")


class Synset(NamedTuple):
    """One line of a ``data.*`` file.

    ``pos`` is the file's letter (``n``, ``v``, ``a``, ``r``: satellites are in ``a``),
    ``lemmas`` the words with ``_`` turned into spaces and adjective markers stripped, and each
    pointer is ``(symbol, target offset, target pos, source/target)`` as written, where the last
    field is four hex digits: source and target word numbers (1-based), ``0000`` for a pointer
    between whole synsets.
    """

    pos: str
    offset: str
    lemmas: tuple[str, ...]
    pointers: tuple[tuple[str, str, str, str], ...]
    gloss: str


def read_synsets(root: Path) -> Iterator[Synset]:
    """Every synset of the four data files, in file order (noun, verb, adj, adv)."""
    for pos, fname in POS_FILES:
        path = root / f"data.{fname}"
        for line_no, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
            if not line or line.startswith("  "):  # the license header is indented
                continue
            head, sep, gloss = line.partition(" | ")
            fields = head.split()
            try:
                offset = fields[0]
                n_words = int(fields[3], 16)
                words = fields[4:4 + 2 * n_words:2]
                p_at = 4 + 2 * n_words
                n_ptrs = int(fields[p_at])
                ptr_fields = fields[p_at + 1:p_at + 1 + 4 * n_ptrs]
            except (IndexError, ValueError):
                raise KgprobeError("not a WordNet data line", path=path, line=line_no) from None
            if not sep or len(ptr_fields) != 4 * n_ptrs:
                raise KgprobeError("not a WordNet data line", path=path, line=line_no)
            yield Synset(
                pos=pos,
                offset=offset,
                lemmas=tuple(_ADJ_MARKER.sub("", w).replace("_", " ") for w in words),
                pointers=tuple(tuple(ptr_fields[k:k + 4]) for k in range(0, len(ptr_fields), 4)),
                gloss=gloss.strip(),
            )


@lru_cache(maxsize=2)  # a few seconds of parsing; Synsets are immutable
def synsets_by_offset(root: str) -> dict[str, Synset]:
    """offset -> :class:`Synset` over the four data files; where two parts of speech share an
    offset the first file's (noun, verb, adj, adv) is kept."""
    table: dict[str, Synset] = {}
    for synset in read_synsets(Path(root)):
        table.setdefault(synset.offset, synset)
    return table


class IndexEntry(NamedTuple):
    """One line of an ``index.*`` file: a lemma (``_`` between words, as written) in one part of
    speech, its synset offsets most frequent sense first, and how many of its senses are tagged in
    WordNet's semantic concordance (SemCor): 0 for words that running text hardly uses."""

    lemma: str
    pos: str
    offsets: tuple[str, ...]
    tagged: int


def read_index(root: Path) -> Iterator[IndexEntry]:
    """Every lemma of the four index files (noun, verb, adj, adv)."""
    for pos, fname in POS_FILES:
        path = root / f"index.{fname}"
        if not path.is_file():
            raise KgprobeError("WordNet 3.0 index file missing (it comes with data.* in wordnet-base)", path=path)
        for line_no, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
            if not line or line.startswith(" "):  # the license header is indented
                continue
            fields = line.split()
            try:
                n_synsets, n_pointers = int(fields[2]), int(fields[3])
                tagged = int(fields[5 + n_pointers])
            except (IndexError, ValueError):
                raise KgprobeError("not a WordNet index line", path=path, line=line_no) from None
            yield IndexEntry(fields[0], pos, tuple(fields[6 + n_pointers:6 + n_pointers + n_synsets]), tagged)


def build(*, wordnet_dir: str | os.PathLike | None = None) -> KnowledgeGraph:
    """Parse WordNet 3.0 into a :class:`KnowledgeGraph` named ``wordnet``.

    Entity ids are the synset offsets; the ~300 offsets that occur in more than one data file
    keep the plain id in the first file (noun, verb, adj, adv order) and get ``{offset}-{pos}``
    in later ones. Lexical pointers (between two words) are lifted to their synsets, as WN18RR
    does; the few that join two words of the same synset would be self-loops and are skipped.
    Repeated triples are dropped, keeping the first in file order.
    """
    root = resolve_dir(wordnet_dir)
    problem = available(root)
    if problem:
        raise KgprobeError(problem)

    ids: list[str] = []
    labels: list[str] = []
    glosses: list[str] = []
    index: dict[tuple[str, str], int] = {}  # (file pos letter, offset) -> entity index
    taken: set[str] = set()
    # (source index, relation index, target pos letter, target offset), resolved once every
    # synset has its index, since pointers refer forward as well as backward.
    pointers: list[tuple[int, int, str, str]] = []
    rel_index = {sym: i for i, sym in enumerate(POINTERS)}

    for synset in read_synsets(root):
        pos, offset = synset.pos, synset.offset
        me = len(ids)
        index[(pos, offset)] = me
        ids.append(offset if offset not in taken else f"{offset}-{pos}")
        taken.add(offset)
        labels.append(", ".join(synset.lemmas))
        glosses.append(synset.gloss)
        for symbol, target_offset, target_pos, _ in synset.pointers:
            rel = rel_index.get(symbol)
            if rel is not None:
                pointers.append((me, rel, target_pos, target_offset))

    rows: dict[tuple[int, int, int], None] = {}  # an insertion-ordered set
    for src, rel, tpos, toff in pointers:
        target = index.get(("a" if tpos == "s" else tpos, toff))
        if target is None:
            raise KgprobeError(f"synset {ids[src]} points to unknown synset {toff} ({tpos})",
                               path=root)
        # A lexical pointer between two words of one synset (tercel -> tercelet) would become
        # a self-loop, which says nothing at synset level.
        if target != src:
            rows[(src, rel, target)] = None

    return KnowledgeGraph(
        entity_ids=ids,
        relation_ids=[rid for rid, _ in POINTERS.values()],
        triples=torch.tensor(list(rows), dtype=torch.long).reshape(-1, 3),
        entity_labels=labels,
        entity_descriptions=glosses,
        relation_labels=[label for _, label in POINTERS.values()],
        name="wordnet",
    )
