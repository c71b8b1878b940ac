"""Screenshots of `kgprobe serve`'s main pages over real runs, for docs/serve.md (docs/img/serve_*.png).

The runs are copies (the originals are never touched; a benchmark may still be writing them):

* the SmolLM2-135M harvests of eval/results/relations_runs/ (eval/bench_relations.py), capital_of
  judged against countries:capital on the copy (`kgprobe harvest-eval`'s evaluate_run);
* the SmolLM2-135M concept-vector run eval/results/concepts_runs/smollm2-135m (eval/bench_concepts.py),
  its JSONL files cut at their last complete line.

capital_of is loaded into a store (the API behind `kgprobe kg load`), `kgprobe serve RUNS --store
STORE --port 0` runs in a subprocess, and headless Debian Chromium (Selenium, /usr/bin/chromedriver)
takes a 1280x900 screenshot of: the runs page; the capital_of harvest page sorted by score,
scrolled to its tuples (wrong ones red); the entity page of Australia; one concept's page (the
first with null tests); and the SPARQL page with a query's results. Each PNG is reduced to 256
colours (Pillow) to stay small.

    python eval/screenshots_serve.py                 # ~1 min; writes docs/img/serve_*.png
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from bench_serve import start_server  # noqa: E402

RELATIONS = ROOT / "eval" / "results" / "relations_runs"
CONCEPTS = ROOT / "eval" / "results" / "concepts_runs" / "smollm2-135m"
SHOWN_RELATIONS = ("capital_of", "borders", "antonym", "animal_class")
PAIRS = """PREFIX rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX kgp: <https://kgprobe.org/kg/schema#>
SELECT ?city ?country ?score WHERE {
  ?t rdf:subject ?c ; rdf:object ?k ; kgp:score ?score .
  ?c rdfs:label ?city . ?k rdfs:label ?country
} ORDER BY DESC(?score) LIMIT 12"""


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--entity", default="Australia", help="the entity page shown (an entity of capital_of)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    return ap.parse_args()


def _copy_jsonl_whole_lines(src: Path, dst: Path) -> None:
    """Copy a run directory; each JSONL file up to its last complete line (it may be being written)."""
    shutil.copytree(src, dst)
    for path in dst.glob("*.jsonl"):
        data = path.read_bytes()
        path.write_bytes(data[:data.rfind(b"\n") + 1])


def prepare(work: Path) -> tuple[Path, Path, dict]:
    """RUNS (copies of the real runs), a store with capital_of, and what the pages show."""
    from kgprobe.harvest.evaluate import evaluate_run
    from kgprobe.kg.store import open_store

    runs = work / "runs"
    for name in SHOWN_RELATIONS:
        if (RELATIONS / name / "tuples.jsonl").is_file():
            _copy_jsonl_whole_lines(RELATIONS / name, runs / "relations" / name)
    harvest = runs / "relations" / "capital_of"
    if not (harvest / "tuples.jsonl").is_file():
        raise SystemExit(f"no harvest run at {RELATIONS / 'capital_of'}: run eval/bench_relations.py first")
    shutil.rmtree(harvest / "critic", ignore_errors=True)
    evaluate_run(harvest, "countries:capital", head_slot=1, tail_slot=0)  # as its relation.yaml names it
    concept = None
    if (CONCEPTS / "concepts.jsonl").is_file():
        _copy_jsonl_whole_lines(CONCEPTS, runs / "concepts" / "smollm2-135m")
        tested = [json.loads(line) for line in (runs / "concepts" / "smollm2-135m" / "null.jsonl").open()]
        concept = next((r["concept"] for r in tested if r.get("tests")), None)
    store = work / "store"
    with open_store(store, create=True, read_only=False) as s:
        s.load(harvest)
    return runs, store, {"concept": concept}


def _driver(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    # the window's size includes the browser's frame: fix the page's own viewport instead
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


def shoot(driver, url: str, css: str, target: Path, *, scroll_to: str | None = None) -> dict:
    """Open ``url``, wait for ``css``, optionally scroll an element into view, save a small PNG."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))
    if scroll_to:
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})",
                              driver.find_element(By.CSS_SELECTOR, scroll_to))
    raw = target.with_suffix(".raw.png")
    driver.save_screenshot(str(raw))
    with Image.open(raw) as img:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    raw.unlink()
    return {"file": str(target.relative_to(ROOT) if target.is_relative_to(ROOT) else target), "url": url,
            "bytes": target.stat().st_size}


def take_all(base: str, out_dir: Path, entity: str, concept: str | None, size: tuple[int, int]) -> list[dict]:
    run = "relations/capital_of"
    pages = [("serve_runs.png", "/", "table#runs", None),
             ("serve_harvest.png", f"/harvest/{run}?sort=score", "table#tuples", "#tuple-table"),
             ("serve_entity.png", f"/entity/{run}/{quote(entity, safe='')}", "svg#graph", None),
             ("serve_query.png", "/query?" + urlencode({"query": PAIRS}), "table#results", None)]
    if concept:
        pages.insert(3, ("serve_concept.png", f"/concept/concepts/smollm2-135m/{quote(concept, safe='')}",
                         "h1", None))
    out_dir.mkdir(parents=True, exist_ok=True)
    driver = _driver(*size)
    try:
        return [shoot(driver, base + url, css, out_dir / name, scroll_to=scroll) for name, url, css, scroll in pages]
    finally:
        driver.quit()


def main() -> None:
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="screens_serve_"))
    try:
        runs, store, shown = prepare(work)
        proc, base = start_server(runs, store)
        try:
            done = take_all(base, args.out_dir, args.entity, shown["concept"], (args.width, args.height))
        finally:
            proc.terminate()
            proc.communicate(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for d in done:
        print(f"{d['file']}: {d['bytes'] // 1024} KiB  ({d['url'][:100]})")


if __name__ == "__main__":
    main()
