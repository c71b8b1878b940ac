"""Property-based tests of the two YAML config parsers (relation files, pipelines).

Whatever the bytes, loading either succeeds or raises one ``KgprobeError`` whose one-line
message starts with the file's path: never another exception, never a traceback from the CLI,
and ``kgprobe run FILE --check`` writes nothing. Inputs are random bytes and text, and the real
files under kg_data/relations/ and pipelines/ mutated line by line (deleted, duplicated, swapped
lines, changed scalars and keys, tabs, invalid UTF-8) or as data (values swapped for other types
or ranges, keys dropped or added) and written back as YAML.

``KGPROBE_FUZZ_EXAMPLES`` raises the number of examples per test for a longer hunt.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.harvest.relation import load_relation
from kgprobe.pipeline import load_pipeline

ROOT = Path(__file__).parent.parent
RELATIONS = sorted((ROOT / "kg_data" / "relations").glob("*.yaml"))
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
ALL_FILES = RELATIONS + PIPELINES
EXAMPLES = int(os.environ.get("KGPROBE_FUZZ_EXAMPLES", "0"))


def _settings(n: int):
    # no example database: it would write .hypothesis/ into the working folder this file checks
    return settings(max_examples=EXAMPLES or n, deadline=None, database=None, derandomize=not EXAMPLES,
                    suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------ inputs
# replacement scalars: wrong types, out-of-range numbers, YAML oddities, names that are almost right
SCALARS = [
    "-5", "0", "1", "-1", "2.5", "2", "''", '""', "null", "~", "true", "no", "[]", "{}", "[a, b]", "{x: 1}",
    "[build_dataset]", "[[Paris, France]]", ".nan", ".inf", "-.inf", "1e999", "99999999999999999999",
    "2020-13-45", "2020-01-01", "!!int x", "!!binary x", "!!set {a}", '"\\0"', '"a\\tb"', "cuda:abc", "cuda:1",
    "cuda", "cpu:0", "auto", "none", "klingon", "german", "/", ".", "..", "/dev/null", "<ENT0>", "<ENT9>",
    "'<ENT0> is <ENT1>'", "'<ENT1> <ENT0>'", "&a x", "*a", "*nope", "|", ">", "- x", "x: y", "'x: y'", "é",
    "kg_data/relations/capital_of.yaml", "pipelines/demo.yaml", "kg_data", "minilm-l6", "smollm2-135m", "bow",
    "lemon", "masked-lm", "causal-lm", "nations", "countries", "umls", "wordnet", "title", "min", "sum",
    "{first_candidates: -5, nonsense_key: 1}", "{search: {first_candidates: 0}}", "{type: country}",
    "{0: 1, 1: 0}", "{0: 1, 5: 1}", "[0, 9]", "[-1]", "{-1: 1}",
]
KEYS = ["type", "as", "name", "seeds", "prompts", "steps", "out", "data", "model", "device", "seed", "out_dir",
        "options", "search", "constraints", "stopwords", "reference", "head", "tail", "max_per_slot",
        "share_slots", "types", "nonsense_key", "kg", "relation", "path", "format", "dataset", "inductive"]
_KEY_VALUE = re.compile(rb"^(\s*(?:-\s+)?[^\s:#][^:#]*:)(.*)$")
_ITEM = re.compile(rb"^(\s*-\s+)(.*)$")


def _replace_value(line: bytes, new: bytes) -> bytes:
    for pattern in (_KEY_VALUE, _ITEM):
        m = pattern.match(line)
        if m:
            return m.group(1) + b" " + new
    return new


def _replace_key(line: bytes, new: bytes) -> bytes:
    m = _KEY_VALUE.match(line)
    if not m:
        return line
    head = m.group(1)
    indent = head[: len(head) - len(head.lstrip(b" -"))]
    return indent + new + b":" + m.group(2)


@st.composite
def mutated_file(draw, files=tuple(ALL_FILES)) -> bytes:
    """A real config file with one to four line edits."""
    lines = draw(st.sampled_from(files)).read_bytes().split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "value", "value", "value", "key", "indent",
                                   "tab", "utf8", "text", "foreign"]))
        line = lines[i] if lines else b""
        if op == "delete" and lines:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "swap" and lines:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "value":
            lines[i:i + 1] = [_replace_value(line, draw(st.sampled_from(SCALARS)).encode())]
        elif op == "key":
            lines[i:i + 1] = [_replace_key(line, draw(st.sampled_from(KEYS)).encode())]
        elif op == "indent":
            lines[i:i + 1] = [line[2:] if draw(st.booleans()) else b"  " + line]
        elif op == "tab":
            at = draw(st.integers(0, len(line)))
            lines[i:i + 1] = [line[:at] + b"\t" + line[at:]]
        elif op == "utf8":  # Latin-1 text, a lone continuation byte, a truncated sequence
            at = draw(st.integers(0, len(line)))
            lines[i:i + 1] = [line[:at] + draw(st.sampled_from([b"\xed", b"\xff", b"\x80", b"\xc3"])) + line[at:]]
        elif op == "text":
            lines.insert(i, draw(st.text(max_size=30)).encode("utf-8", "surrogatepass"))
        else:  # a line of the other kind of file: pipeline keys in a relation and the other way round
            other = draw(st.sampled_from(ALL_FILES)).read_bytes().split(b"\n")
            lines.insert(i, other[draw(st.integers(0, len(other) - 1))])
    return b"\n".join(lines)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.sampled_from([-1, 0, 1, 2, 2**32, -(2**63)])
    | st.floats() | st.text(max_size=12) | st.sampled_from(SCALARS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.integers(-2, 5), inner,
                                                                   max_size=3),
    max_leaves=6,
)


def _paths(data, prefix=()):
    """Every place in a parsed config: mapping keys and list items, depth first."""
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_data(draw, files=tuple(ALL_FILES)) -> bytes:
    """A real config file parsed, one to three values replaced, dropped or added, dumped again."""
    data = yaml.safe_load(draw(st.sampled_from(files)).read_text(encoding="utf-8"))
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p in _paths(data) if p]
        where = draw(st.sampled_from(places))
        parent = data
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if action == "replace":
            parent[where[-1]] = draw(_JSONISH)
        elif action == "drop":
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(_JSONISH)
        else:
            parent.append(draw(_JSONISH))
    return yaml.safe_dump(data, allow_unicode=True).encode("utf-8")


ANY_BYTES = st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------------ checks
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working folder that sees kg_data/ (the files' relative paths) and in which nothing
    may appear: the tests chdir into it and compare its listing before and after."""
    root = tmp_path_factory.mktemp("cwd")
    (root / "kg_data").symlink_to(ROOT / "kg_data")
    old = os.getcwd()
    os.chdir(root)
    yield root
    os.chdir(old)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "kg_data" not in p.parts)


def _fails_cleanly(load, path: Path) -> None:
    """``load(path)`` succeeds or raises a one-line KgprobeError that starts with the path."""
    try:
        load(path)
    except KgprobeError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(f"{path}:"), message


def _load_relation_bytes(workdir: Path, data: bytes) -> None:
    path = workdir / "relation.yaml"
    path.write_bytes(data)
    before = _listing(workdir)
    _fails_cleanly(load_relation, path)
    assert _listing(workdir) == before


def _load_pipeline_bytes(workdir: Path, data: bytes) -> None:
    path = workdir / "pipeline.yaml"
    path.write_bytes(data)
    out_dir = workdir / "out"
    before = _listing(workdir)
    _fails_cleanly(lambda p: load_pipeline(p, out_dir=out_dir), path)
    assert _listing(workdir) == before and not out_dir.exists()


@_settings(150)
@given(data=mutated_file(tuple(RELATIONS)) | mutated_data(tuple(RELATIONS)) | ANY_BYTES)
def test_relation_loads_or_fails_with_one_line(workdir, data):
    _load_relation_bytes(workdir, data)


@_settings(150)
@given(data=mutated_file(tuple(PIPELINES)) | mutated_data(tuple(PIPELINES)) | ANY_BYTES)
def test_pipeline_loads_or_fails_with_one_line(workdir, data):
    _load_pipeline_bytes(workdir, data)


@_settings(60)
@given(data=mutated_file() | mutated_data())
def test_either_parser_on_either_kind_of_file(workdir, data):
    _load_relation_bytes(workdir, data)
    _load_pipeline_bytes(workdir, data)


@_settings(25)
@given(data=mutated_file(tuple(PIPELINES)) | mutated_data(tuple(PIPELINES)))
def test_run_check_exit_0_or_one_error_line_and_writes_nothing(workdir, capsys, data):
    path = workdir / "pipeline.yaml"
    path.write_bytes(data)
    out_dir = workdir / "out"
    before = _listing(workdir)
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--check", "--out-dir", str(out_dir)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if not line.startswith("kgprobe: warning: ")]
    if exc.value.code == 0:
        assert errors == [] and "OK" in out
    else:
        assert exc.value.code == 2 and len(errors) == 1 and errors[0].startswith(f"kgprobe: error: {path}"), err
    assert _listing(workdir) == before and not out_dir.exists()


# ------------------------------------------------------------------ what the fuzzing found, pinned
STEP = "steps: [{type: build_dataset, dataset: nations}]\n"


@pytest.mark.parametrize("text, message", [
    # TypeError: unhashable type (a list or mapping as the step type)
    ("name: x\nsteps:\n  - type: [build_dataset]\n", ":3: steps[0].type: the step type must be a name, got list"),
    ("name: x\nsteps:\n  - type: {a: 1}\n", ":3: steps[0].type: the step type must be a name, got dict"),
    # ValueError from PyYAML's own constructors
    ("name: x\nseed: 2020-13-45\n" + STEP, ":2: invalid YAML: not a valid timestamp '2020-13-45'"),
    ("name: !!int x\n" + STEP, ":1: invalid YAML: not a valid int 'x'"),
    ("name: !!float x\n" + STEP, ":1: invalid YAML: not a valid float 'x'"),
    ("name: !!timestamp x\n" + STEP, ":1: invalid YAML: not a valid timestamp 'x'"),
    # accepted before, failed at run time
    ("name: x\nseed: -1\n" + STEP, ":2: seed: must be >= 0, got -1"),
    ("name: x\nseed: 99999999999\n" + STEP, ":2: seed: must be < 4294967296, got 99999999999"),
    ("name: x\ndevice: 'cuda:abc'\n" + STEP, ":2: device: bad device 'cuda:abc'"),
    ("name: x\nsteps:\n  - {type: harvest, relation: kg_data/relations/capital_of.yaml, out: h,\n"
     "     options: {top_k: 5}}\n", ":4: steps[0].options.top_k: unknown option"),
    ("name: x\nsteps:\n  - {type: build_dataset, dataset: nations, options: {colour: red}}\n",
     ":3: steps[0].options.colour: unknown option for dataset 'nations' (it takes none)"),
    # silently accepted before
    ("name: x\nname: y\n" + STEP, ":2: key 'name' is given twice (first on line 1)"),
    ("name: x\nsteps:\n  - {type: build_dataset, dataset: nations, dataset: umls}\n",
     ":3: key 'dataset' is given twice (first on line 3)"),
    ("name: Bras\xedlia\n" + STEP, ":1: not valid UTF-8 text (byte 0xed: invalid continuation byte)"),
    ("name: x\x01\n" + STEP, ":1: invalid YAML: unacceptable character #x0001"),
])
def test_pipeline_errors_found_by_fuzzing(workdir, text, message):
    path = workdir / "pipeline.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(KgprobeError) as err:
        load_pipeline(path, out_dir=workdir / "out")
    assert str(err.value).startswith(f"{path}{message}"), str(err.value)


def test_directory_or_missing_file(workdir):
    for load in (load_relation, load_pipeline):
        for path, message in ((workdir, "is a directory, expected a YAML file"),
                              (workdir / "nope.yaml", "no such file")):
            with pytest.raises(KgprobeError) as err:
                load(path)
            assert str(err.value) == f"{path}: {message}"


def test_merge_keys_are_not_duplicates(workdir):
    """``<<: *base`` then an overriding key is YAML's merge, not a key given twice."""
    path = workdir / "pipeline.yaml"
    path.write_text("name: x\nsteps:\n  - &b {type: build_dataset, dataset: nations}\n"
                    "  - {<<: *b, dataset: umls, as: u}\n", encoding="utf-8")
    assert [s.dataset for s in load_pipeline(path, out_dir=workdir / "out").steps] == ["nations", "umls"]
