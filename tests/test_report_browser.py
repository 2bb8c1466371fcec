"""The report site in a real browser: Debian's Chromium, headless, driven through Selenium and
``chromium-driver``, over the site of a store holding every experiment at a tiny size.

On every page (index, verdict, one page per run), at 800 and 1280 px wide: every image loads,
nothing overflows horizontally (wide tables scroll inside their box), every table cell sits
under the header of its own key — by key and by position on screen — with the text the summary
gives (recomputed from the stored records), every link resolves, and the console has no error.

``.ci/run`` installs ``chromium`` and ``chromium-driver`` and sets ``ESCAPELAB_REQUIRE_BROWSER=1``,
under which a missing browser is an error; elsewhere, where no browser can be found, the tests
are skipped with that reason, never passed silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from escapelab.config import build
from escapelab.experiments import get_experiment
from escapelab.report.columns import format_cell
from escapelab.runner.store import Store
from report_store import TINY_SPECS

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
MISSING = (
    "no Chromium browser or chromedriver on PATH (apt-get install chromium chromium-driver; "
    ".ci/run does)"
)
if not (CHROMIUM and DRIVER) and os.environ.get("ESCAPELAB_REQUIRE_BROWSER") == "1":
    pytest.fail(f"ESCAPELAB_REQUIRE_BROWSER=1 but {MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason=MISSING)
WIDTHS = (800, 1280)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _pages(site: Path) -> list[Path]:
    return [site / "index.html", site / "verdict.html", *sorted(site.glob("runs/*/index.html"))]


def _open(browser, page: Path, width: int) -> None:
    browser.set_window_size(width, 900)
    browser.get(page.as_uri())
    browser.get_log("browser")  # drop what an earlier page left


@pytest.fixture(scope="module")
def site(tiny_report_site: Path) -> Path:
    return tiny_report_site


def test_the_site_has_every_page(site: Path) -> None:
    # the index, the verdict and one page per run of the tiny store
    assert len(_pages(site)) == 2 + len(TINY_SPECS)


@pytest.mark.parametrize("width", WIDTHS)
def test_images_load_and_nothing_overflows(browser, site: Path, width: int) -> None:
    for page in _pages(site):
        browser.set_window_size(width, 900)
        browser.get(page.as_uri())
        state = browser.execute_script(
            """
            const doc = document.documentElement;
            const imgs = [...document.images].map(i => ({
                src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                right: i.getBoundingClientRect().right}));
            return {inner: window.innerWidth, client: doc.clientWidth, scroll: doc.scrollWidth,
                    imgs: imgs, title: document.title};
            """
        )
        assert state["inner"] == width or abs(state["inner"] - width) < 20, state["inner"]
        assert state["scroll"] <= state["client"], (page, width, state["scroll"])
        for img in state["imgs"]:
            assert img["ok"], (page, img["src"])
            assert img["right"] <= state["client"], (page, img["src"], width)
        if "runs" in page.parts:
            assert state["imgs"], f"{page} shows no figure"
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, (page, errors)


_CELLS_JS = """
return [...document.querySelectorAll('table.summary')].map(t => {
    const heads = [...t.querySelectorAll('thead th')].map(th => {
        const r = th.getBoundingClientRect();
        return {key: th.dataset.key, left: r.left, right: r.right};
    });
    const rows = [...t.querySelectorAll('tbody tr')].map(tr => ({
        row: Number(tr.dataset.row),
        cells: [...tr.children].map(td => {
            const r = td.getBoundingClientRect();
            return {key: td.dataset.key, text: td.textContent, left: r.left, right: r.right};
        })}));
    return {heads: heads, rows: rows};
});
"""


@pytest.mark.parametrize("width", WIDTHS)
def test_every_cell_sits_under_the_header_of_its_own_key(
    browser, site: Path, tiny_report_store: Path, width: int
) -> None:
    db = Store(tiny_report_store)
    for run in db.experiments():
        exp = get_experiment(run.name)
        summary = exp.summarize(build(exp.spec_type, run.spec), db.records(run.hash))
        _open(browser, site / "runs" / run.hash / "index.html", width)
        tables = browser.execute_script(_CELLS_JS)
        assert tables, run.name
        shown = set()
        for table in tables:
            heads = table["heads"]
            for row in table["rows"]:
                record = summary[row["row"]]
                assert len(row["cells"]) == len(heads)
                for head, cell in zip(heads, row["cells"], strict=True):
                    assert cell["key"] == head["key"], (run.name, row["row"])
                    # on screen: the cell spans exactly its header's column
                    assert abs(cell["left"] - head["left"]) < 1.0
                    assert abs(cell["right"] - head["right"]) < 1.0
                    assert cell["text"] == format_cell(cell["key"], record.get(cell["key"]))
                assert set(record) <= {h["key"] for h in heads}, run.name
                shown.add(row["row"])
        assert shown == set(range(len(summary))), run.name


def test_every_link_resolves(browser, site: Path) -> None:
    for page in _pages(site):
        _open(browser, page, 1280)
        links = browser.execute_script(
            "return [...document.querySelectorAll('a[href]')].map(a => a.href);"
        )
        ids = set(
            browser.execute_script("return [...document.querySelectorAll('[id]')].map(e => e.id);")
        )
        assert links, page
        for href in links:
            url = urlparse(href)
            assert url.scheme == "file", (page, href)  # nothing from the network
            target = Path(unquote(url.path))
            assert target.is_file(), (page, href)
            if url.fragment and target == page:
                assert url.fragment in ids, (page, href)
