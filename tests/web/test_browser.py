"""The dashboard and the Pareto report in a real Chromium (Playwright, /usr/bin/chromium).

The dashboard runs under uvicorn in a background thread on a free loopback port. Every test
gets its own SQLite store: a copy of one filled once by real (tiny) searches, or a new one it
fills itself. Every page must keep a clean console and never open a dialog (the hostile search
names would call ``alert`` if they ever ran).
"""

from __future__ import annotations

import ast
import queue
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app as cli_app
from fusion_nas.evaluation import trainer as evaluate_module
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.web import background_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]

REAL = "browser search"
XSS_NAMES = ("<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>")
TIMEOUT = 15_000  # ms: page loads and first draws
POLL_MS = 200  # how often the dashboard's pages poll in these tests


def config(name: str, trials: int) -> SearchConfig:
    return SearchConfig(
        name=name,
        space=load_space("digits"),
        dataset="synthetic",
        trials=trials,
        proxy=ProxyConfig(epochs=1, train_subset=64, batch_size=64),
    )


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file filled once by real searches; tests open copies of it, never it."""
    path = tmp_path_factory.mktemp("browser") / "filled.db"
    st = Store(f"sqlite:///{path}")
    run_search(config(REAL, 4), st)
    for name in XSS_NAMES:
        run_search(config(name, 2), st)
    return path


@pytest.fixture
def store(filled_db: Path, tmp_path: Path) -> Store:
    """This test's own copy of the filled store."""
    path = tmp_path / "store.db"
    shutil.copyfile(filled_db, path)
    return Store(f"sqlite:///{path}", create=False)


@pytest.fixture
def server(store: Store) -> Iterator[str]:
    with background_server(store, poll_ms=POLL_MS) as base:
        yield base


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_tab(chromium) -> Iterator[Callable[[], object]]:
    """Open tabs that record console errors, page errors and dialogs; fail on any.

    Tests name it after ``server``, so its tabs close before that server stops (a page
    polling a stopped server would log a connection error).
    """
    context = chromium.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT)
    problems: list[str] = []

    def open_tab(expect_404: bool = False) -> object:
        page = context.new_page()

        def on_console(message: object) -> None:
            if message.type != "error":
                return
            if expect_404 and "status of 404" in message.text:
                return  # the 404 page this test asked for
            problems.append(f"console error: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        def on_dialog(dialog: object) -> None:
            problems.append(f"dialog: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        return page

    yield open_tab
    context.close()
    assert problems == []


def url(base: str, path: str, **params: object) -> str:
    return f"{base}{path}?{urlencode(params)}" if params else f"{base}{path}"


def count_points(page: object, n: int, timeout: float | None = None) -> None:
    """Wait until the Pareto plot draws ``n`` markers (one per trial)."""
    page.wait_for_function(
        "n => document.querySelectorAll('#pareto .scatterlayer .point').length === n",
        arg=n,
        timeout=timeout,
    )


def table_macs(page: object) -> list[int]:
    cells = page.locator("#trials tbody tr td:nth-child(5)").all_inner_texts()
    return [int(text.replace(",", "")) for text in cells]


def test_list_shows_the_searches(server: str, store: Store, new_tab) -> None:
    page = new_tab()
    page.goto(server + "/")
    for name in (REAL, *XSS_NAMES):
        row = page.locator(
            "#searches tbody tr", has=page.get_by_role("link", name=name, exact=True)
        )
        row.wait_for()
        n = len(store.trials(name))
        assert f"{n} / {n}" in row.inner_text()
        assert "done" in row.inner_text()


def test_pareto_plot_has_every_trial_and_opens_them(server: str, store: Store, new_tab) -> None:
    n = len(store.trials(REAL))
    page = new_tab()
    page.goto(url(server, "/search", name=REAL))
    count_points(page, n)
    drawn = page.evaluate(
        """() => document.getElementById('pareto').data
             .filter(t => t.mode.includes('markers'))
             .reduce((sum, t) => sum + t.x.length, 0)"""
    )
    assert drawn == n
    assert page.locator("#trials tbody tr").count() == n

    # A click on a point of the plot opens that point's trial.
    point = page.locator("#pareto .scatterlayer .point").first
    box = point.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.locator("#pareto .hoverlayer .hovertext").first.wait_for()
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(r"/trial\?search=browser\+search&number=\d+$"))
    number = int(page.url.rsplit("=", 1)[1])
    page.locator("#macs", has_text=f"{store.trial(REAL, number)['macs']:,}").wait_for()

    # Column headers sort the table in the page; a click on a row opens that row's trial.
    page.go_back()
    count_points(page, n)
    macs = sorted(int(m) for m in store.trials(REAL).macs)
    page.locator("#trials th[data-key=macs] button").click()
    assert table_macs(page) == macs
    page.locator("#trials th[data-key=macs] button").click()
    assert table_macs(page) == macs[::-1]
    assert page.locator("#trials th[data-key=macs]").get_attribute("aria-sort") == "descending"
    row = page.locator("#trials tbody tr").nth(n - 1)
    number = int(row.get_attribute("data-number"))
    row.locator("td.mono").click()
    page.wait_for_url(url(server, "/trial", search=REAL, number=number))
    assert page.locator("h1").inner_text().startswith(f"Trial {number} of {REAL}")


def test_trial_page_and_downloads(server: str, store: Store, new_tab) -> None:
    df = store.trials(REAL)
    number = int(df.number[df.status == "complete"].iloc[0])
    arch = store.trial(REAL, number)["arch"]
    page = new_tab()
    page.goto(url(server, "/trial", search=REAL, number=number))
    page.locator("#stages tbody tr").nth(len(arch["stages"]) - 1).wait_for()
    first = page.locator("#stages tbody tr").first.inner_text()
    assert arch["stages"][0]["operator"] in first
    page.locator("#curve .scatterlayer .point").first.wait_for()

    with page.expect_download() as info:
        page.click("#download-code")
    download = info.value
    assert download.suggested_filename == f"fusion_browser_search_{number}.py"
    source = Path(download.path()).read_text()
    tree = ast.parse(source)
    assert "FusionNet" in {node.name for node in tree.body if isinstance(node, ast.ClassDef)}

    with page.expect_download() as info:
        page.click("#download-json")
    assert info.value.suggested_filename == f"fusion_browser_search_{number}.json"
    assert '"arch_id"' in Path(info.value.path()).read_text()


LIVE_WAIT_MS = 60_000  # a ceiling only: every wait below ends as soon as its event happens

# The search page's state, read from what Plotly drew: [complete trials, numbers in training].
PAGE_STATE = """() => {
  const plot = document.getElementById('pareto');
  if (!plot || !plot.data || document.body.dataset.trials === undefined) return null;
  const role = r => plot.data.filter(t => t.meta && t.meta.role === r);
  const complete = role('trials').reduce((sum, t) => sum + t.x.length, 0);
  const running = role('running').flatMap(t => t.customdata.map(c => c[0]));
  return [Number(document.body.dataset.trials), complete, running];
}"""


def wait_for_state(page: object, rows: int, complete: int, running: list[int]) -> None:
    """Wait until the search page shows ``rows`` trials: ``complete`` points on the plane and
    ``running`` (numbers) in the strip, all drawn."""
    page.wait_for_function(
        f"want => JSON.stringify(({PAGE_STATE})()) === JSON.stringify(want)",
        arg=[rows, complete, running],
        timeout=LIVE_WAIT_MS,
    )
    count_points(page, rows, timeout=LIVE_WAIT_MS)  # one marker per trial on the page


def test_a_running_search_adds_its_trials_one_by_one(
    new_tab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real search runs in a thread; each trial's training waits for the test, so the pages
    are checked while the search is in progress, after each trial, before the next one."""
    total, store_url = 4, f"sqlite:///{tmp_path}/live.db"
    in_training: queue.Queue[int] = queue.Queue()  # training call k has begun
    go = threading.Semaphore(0)  # the test lets one training call proceed
    real_train, calls, errors = evaluate_module.train_proxy, [], []

    def gated_train(*args: object, **kwargs: object) -> object:
        calls.append(len(calls))
        in_training.put(calls[-1])
        if not go.acquire(timeout=LIVE_WAIT_MS / 1000):
            raise RuntimeError("the test did not let this trial train")
        return real_train(*args, **kwargs)

    def search() -> None:
        try:
            run_search(config("live", total), Store(store_url))
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    monkeypatch.setattr(evaluate_module, "train_proxy", gated_train)
    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    try:
        assert in_training.get(timeout=LIVE_WAIT_MS / 1000) == 0  # the search exists now
        with background_server(Store(store_url, create=False), poll_ms=POLL_MS) as base:
            listing, page = new_tab(), new_tab()
            listing.goto(base + "/")
            row = listing.locator(
                "#searches tbody tr", has=listing.get_by_role("link", name="live")
            )
            page.goto(url(base, "/search", name="live"))
            for p in (listing, page):
                p.evaluate("() => { window.notReloaded = true; }")
            for n in range(total):
                # Trials 0..n-1 are recorded and trial n is training, blocked until go.
                wait_for_state(page, n + 1, n, [n])
                assert page.locator("#status").inner_text() == "running"
                assert page.locator(f"#trials tbody tr[data-number='{n}']").count() == 1
                row.filter(has_text=f"{n} / {total}").filter(has_text="running").wait_for(
                    timeout=LIVE_WAIT_MS
                )
                assert thread.is_alive() and calls == list(range(n + 1))
                go.release()
                if n + 1 < total:
                    assert in_training.get(timeout=LIVE_WAIT_MS / 1000) == n + 1
            thread.join(timeout=LIVE_WAIT_MS / 1000)
            assert not thread.is_alive() and errors == []
            wait_for_state(page, total, total, [])
            page.locator("#status", has_text="done").wait_for(timeout=LIVE_WAIT_MS)
            assert page.locator("#trial-count").inner_text() == f"({total})"
            row.filter(has_text=f"{total} / {total}").filter(has_text="done").wait_for(
                timeout=LIVE_WAIT_MS
            )
            for p in (listing, page):
                assert p.evaluate("() => window.notReloaded") is True
                p.close()  # before the server stops, so no poll finds it gone
    finally:
        go.release(total)  # a failed check must not leave the search waiting
        thread.join(timeout=LIVE_WAIT_MS / 1000)


@pytest.mark.parametrize("name", XSS_NAMES)
def test_hostile_names_render_as_text(server: str, name: str, new_tab) -> None:
    page = new_tab()
    page.goto(server + "/")
    link = page.get_by_role("link", name=name, exact=True)
    link.click()
    page.wait_for_url(url(server, "/search", name=name))
    assert page.locator("#search-name").inner_text() == name
    assert page.title() == f"{name} · fusion-nas"
    count_points(page, 2)
    legend = page.locator("#pareto .legendtext").first.text_content()
    assert legend.startswith(name)  # Plotly shows the escaped name literally

    page.locator("#trials tbody tr").first.locator("td.mono").click()
    page.wait_for_url(re.compile(r"/trial\?"))
    assert name in page.locator("h1").inner_text()
    assert page.locator("img").count() == 0  # the name never became an element

    missing = new_tab(expect_404=True)
    missing.goto(url(server, "/search", name=name + "?"))
    assert missing.locator("#message").inner_text() == f"no search named {name + '?'!r}"
    assert missing.locator("img").count() == 0


def test_pareto_report_works_offline(chromium, store: Store, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    names = [REAL, *XSS_NAMES]
    result = CliRunner().invoke(
        cli_app, ["pareto", *names, "--out", str(out), "--store", store.url]
    )
    assert result.exit_code == 0, result.output
    total = sum(len(store.trials(name)) for name in names)

    context = chromium.new_context()
    page = context.new_page()
    problems: list[str] = []
    network: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))

    def only_files(route: object) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            network.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    page.goto(out.as_uri())
    count_points(page, total)
    legend = page.locator("#pareto .legendtext").all_text_contents()
    for name in names:
        assert any(text.startswith(name) for text in legend)
    context.close()
    assert network == [] and problems == []
