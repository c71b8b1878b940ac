"""`kgprobe serve` in a real browser: headless Debian Chromium, driven by Selenium through
/usr/bin/chromedriver, against the real command (`kgprobe serve RUNS --store STORE --port 0` in a
subprocess) over real small runs: a tiny-model harvest loaded into a store with `kgprobe kg load`,
and a hand-written harvest with a `<script>` entity. It clicks through the runs page, the harvest
page (sort, filter), an entity page and the SPARQL form, and checks that no script of a run's text
ever runs. Skipped only where chromium or chromedriver is not installed (`make install` installs
both, as root)."""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys

import pytest

CHROMIUM = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver; "
                "`make install` does it as root)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from kgprobe.serve.announce import announced_url  # noqa: E402
from serve_runs import XSS, harvest_files, tiny_harvest  # noqa: E402

pytestmark = pytest.mark.slow  # a harvest, a server and a browser: ~20 s

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
# the harvested pairs by their labels, as the store holds them (reified statements)
PAIRS = (f"SELECT ?city ?country WHERE {{ ?t <{RDF}subject> ?c ; <{RDF}object> ?k .\n"
         f"  ?c <{LABEL}> ?city . ?k <{LABEL}> ?country }} ORDER BY ?city ?country")
WAIT_S = 30


def _kgprobe(*args: str) -> str:
    """Run a kgprobe command in this process (click's runner); its output."""
    from click.testing import CliRunner

    from kgprobe.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """RUNS_DIR with a tiny-model harvest (in a store too) and a hand harvest; the running server."""
    base = tmp_path_factory.mktemp("browser")
    runs = base / "runs"
    rows = tiny_harvest(base / "model", runs / "tiny" / "capital", top_k=20)
    harvest_files(runs / "hand" / "capital", [["Paris", "France"], [XSS, "Evil & Co"], ["AC/DC", "Australia"]])
    store = base / "store"
    _kgprobe("kg", "load", str(runs / "tiny" / "capital"), "--store", str(store), "--quiet")
    proc = subprocess.Popen([sys.executable, "-m", "kgprobe", "serve", str(runs), "--store", str(store),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    try:
        url = announced_url(proc)
        yield {"url": url, "rows": rows, "store": store}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    # the driver's path is given: Selenium Manager never looks for (or downloads) one
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(WAIT_S)
    yield browser
    browser.quit()


def _open(driver, url: str, css: str):
    driver.get(url)
    return WebDriverWait(driver, WAIT_S).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def _click_and_wait(driver, element, css: str):
    """Click ``element`` (which leads to a new page) and wait for ``css`` on the new page."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(EC.staleness_of(old))
    return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def _shown_rows(driver) -> list[dict]:
    return [{"rank": int(tr.get_attribute("data-rank")),
             "entities": [a.text for a in tr.find_elements(By.CSS_SELECTOR, "td.entity a.entity-link")],
             "score": float(tr.find_element(By.CSS_SELECTOR, "td.score").text)}
            for tr in driver.find_elements(By.CSS_SELECTOR, "table#tuples tbody tr.tuple")]


def test_runs_page_leads_to_the_harvest_page(site, driver):
    _open(driver, site["url"] + "/", "table#runs")
    row = driver.find_element(By.CSS_SELECTOR, 'table#runs tr[data-run="tiny/capital"]')
    assert row.get_attribute("data-kind") == "harvest"
    assert "tuples" in row.text and "capital_of" in row.text
    _click_and_wait(driver, row.find_element(By.CSS_SELECTOR, "a.run-link"), "table#tuples")
    assert driver.current_url.endswith("/harvest/tiny/capital")
    assert driver.find_element(By.ID, "relation").text == "capital_of"
    shown = _shown_rows(driver)
    assert [r["entities"] for r in shown] == [r["entities"] for r in site["rows"]]


def test_sorting_by_score_orders_the_rows(site, driver):
    _open(driver, site["url"] + "/harvest/tiny/capital", "table#tuples")
    for order in ("desc", "asc"):  # the first click sorts best first, the second turns it round
        head = driver.find_element(By.CSS_SELECTOR, "th[data-sort=score] a")
        _click_and_wait(driver, head, "table#tuples")
        assert "sort=score" in driver.current_url
        header = driver.find_element(By.CSS_SELECTOR, "th[data-sort=score]")
        assert header.get_attribute("aria-sort") == ("ascending" if order == "asc" else "descending")
        scores = [r["score"] for r in _shown_rows(driver)]
        assert len(scores) == len(site["rows"])
        assert scores == sorted(scores, reverse=order == "desc"), (order, scores)
        expected = sorted((r["score"] for r in site["rows"]), reverse=order == "desc")
        assert scores == pytest.approx(expected, rel=1e-3)


def test_filter_keeps_only_matching_rows(site, driver):
    rows = site["rows"]
    needle = rows[-1]["entities"][0][:3]
    expected = [r["rank"] for r in rows if any(needle.casefold() in e.casefold() for e in r["entities"])]
    assert 0 < len(expected)
    _open(driver, site["url"] + "/harvest/tiny/capital", "table#tuples")
    box = driver.find_element(By.CSS_SELECTOR, "input#filter")
    box.clear()
    box.send_keys(needle)
    old = driver.find_element(By.TAG_NAME, "html")
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, WAIT_S).until(EC.staleness_of(old))
    WebDriverWait(driver, WAIT_S).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "table#tuples")))
    shown = _shown_rows(driver)
    assert [r["rank"] for r in shown] == expected
    assert all(any(needle.casefold() in e.casefold() for e in r["entities"]) for r in shown)
    assert driver.find_element(By.CSS_SELECTOR, "input#filter").get_attribute("value") == needle
    assert driver.find_element(By.ID, "match-count").text.startswith(f"{len(expected)} of {len(rows)}")


def test_entity_link_leads_to_the_entitys_facts(site, driver):
    first = site["rows"][0]
    head, tail = first["entities"]
    _open(driver, site["url"] + "/harvest/tiny/capital", "table#tuples")
    link = driver.find_element(By.CSS_SELECTOR, f'tr[data-rank="{first["rank"]}"] a.entity-link')
    assert link.text == head
    _click_and_wait(driver, link, "table#facts-out")
    assert driver.find_element(By.ID, "entity-name").text == head
    facts = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
             for tr in driver.find_elements(By.CSS_SELECTOR, "table#facts-out tbody tr")]
    assert ["capital_of", tail] in facts
    assert driver.find_element(By.CSS_SELECTOR, "svg#graph").is_displayed()


def test_sparql_form_shows_the_rows_of_kgprobe_kg_query(site, driver):
    expected = list(csv.reader(io.StringIO(_kgprobe("kg", "query", str(site["store"]), PAIRS, "--format", "csv"))))
    assert expected[0] == ["city", "country"] and len(expected) - 1 == len(site["rows"])
    _open(driver, site["url"] + "/query", "textarea#sparql")
    area = driver.find_element(By.CSS_SELECTOR, "textarea#sparql")
    area.clear()
    area.send_keys(PAIRS)
    _click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "button#run-query"), "table#results")
    table = driver.find_element(By.CSS_SELECTOR, "table#results")
    heads = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
             for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert [heads] + cells == expected
    assert driver.find_element(By.CSS_SELECTOR, "textarea#sparql").get_attribute("value") == PAIRS


def _no_alert(driver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - the property raises when no alert is open


def test_a_script_entity_shows_as_text_and_never_runs(site, driver):
    _open(driver, site["url"] + "/harvest/hand/capital?q=alert", "table#tuples")
    _no_alert(driver)
    links = driver.find_elements(By.CSS_SELECTOR, "table#tuples a.entity-link")
    assert [a.text for a in links] == [XSS, "Evil & Co"]
    assert links[0].is_displayed()
    assert driver.find_elements(By.XPATH, "//table[@id='tuples']//script") == []
    _click_and_wait(driver, links[0], "table#facts-out")
    _no_alert(driver)
    assert driver.find_element(By.ID, "entity-name").text == XSS
    assert "Evil & Co" in driver.find_element(By.CSS_SELECTOR, "table#facts-out").text
    assert driver.execute_script("return document.querySelectorAll('main script, h1 script').length") == 0
