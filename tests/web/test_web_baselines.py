"""The dashboard's search page in a real Chromium shows the stored baselines: labelled diamonds
on the Pareto plot and a table, updated while the page is open (Playwright, /usr/bin/chromium).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from fusion_nas.analysis.baselines import collection_record
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.records import BaselineRecord
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.web import background_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]
HOSTILE = "<img src=x onerror=alert(1)>"  # a description must show as text, never run


def baseline(name: str, val: float, macs: int, description: str = "a network") -> BaselineRecord:
    return BaselineRecord(
        name=name,
        description=description,
        arch=None,
        arch_desc=name,
        macs=macs,
        params=1234,
        val_acc=val,
        test_acc=val + 0.05,
        epochs=60,
        proxy=ProxyConfig(epochs=1).to_dict(),
        seed=0,
        threads=1,
        seconds=2.0,
        created="2026-01-01T00:00:00+00:00",
    )


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    st = Store(f"sqlite:///{tmp_path}/s.db")
    space = load_space("digits")
    proxy = ProxyConfig(epochs=1, train_subset=64, batch_size=64)
    run_search(SearchConfig(name="s", space=space, dataset="synthetic", trials=2, proxy=proxy), st)
    coll = collection_record(space, "synthetic")
    st.save_baseline(coll, baseline("paper-cnn", 0.61, 34_000, HOSTILE))
    st.save_baseline(coll, baseline("hvt", 0.7, 84_640))
    return st


@pytest.fixture()
def page(store: Store) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with background_server(store, poll_ms=200) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_default_timeout(15_000)
        tab.on("console", lambda m: m.type == "error" and problems.append(m.text))
        tab.on("pageerror", lambda e: problems.append(str(e)))
        tab.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
        tab.goto(f"{base}/search?{urlencode({'name': 's'})}")
        yield tab
        browser.close()
    assert problems == []


def labels(page: object) -> list[str]:
    return page.locator("#pareto .scatterlayer .textpoint").all_text_contents()


def test_search_page_draws_and_lists_the_baselines(store: Store, page: object) -> None:
    page.wait_for_function(
        "() => document.querySelectorAll('#pareto .scatterlayer .textpoint').length === 2"
    )
    assert labels(page) == ["paper-cnn", "hvt"]
    trace = page.evaluate(
        """() => document.getElementById('pareto').data
             .filter(t => t.meta && t.meta.role === 'baselines')
             .map(t => ({x: t.x, y: t.y, symbol: t.marker.symbol, click: 'customdata' in t}))"""
    )
    assert trace == [{"x": [34_000, 84_640], "y": [0.61, 0.7], "symbol": "diamond", "click": False}]
    section = page.locator("#baselines")
    assert section.is_visible()
    rows = section.locator("tbody tr")
    assert rows.count() == 2
    first = rows.nth(0).locator("td").all_inner_texts()
    assert first == ["paper-cnn", HOSTILE, "34,000", "1,234", "0.6100", "0.6600"]

    # A baseline stored while the page is open appears without a reload.
    coll = collection_record(load_space("digits"), "synthetic")
    store.save_baseline(coll, baseline("all-conv", 0.8, 80_544))
    page.wait_for_function(
        "() => document.querySelectorAll('#pareto .scatterlayer .textpoint').length === 3"
    )
    assert labels(page) == ["paper-cnn", "hvt", "all-conv"]
    assert section.locator("tbody tr").count() == 3
