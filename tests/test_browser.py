"""The dashboard and the Pareto report in a real Chromium (Playwright, /usr/bin/chromium).

The dashboard runs under uvicorn in a background thread on a free loopback port. Every test
gets its own SQLite store: a copy of one filled once by real (tiny) searches, or a new one it
fills itself. Every page must keep a clean console and never open a dialog (the hostile search
names would call ``alert`` if they ever ran).
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from fusion_nas.cli.app import app as cli_app
from fusion_nas.records import TrialStatus
from fusion_nas.search import SearchConfig, run_search
from fusion_nas.space import load_space
from fusion_nas.store import Store
from fusion_nas.train import ProxyConfig
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
UPDATE_MS = 5_000  # how long a polled update may take to show


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


# (status, val_acc, macs) of the trials a live search records one after another.
LIVE_TRIALS = [
    (TrialStatus.COMPLETE, 0.50, 120_000),
    (TrialStatus.FAILED, None, 90_000),
    (TrialStatus.COMPLETE, 0.70, 200_000),
    (TrialStatus.INFEASIBLE, None, 900_000),
    (TrialStatus.COMPLETE, 0.65, 80_000),
]


def record_trial(study: optuna.Study, number: int) -> None:
    """Record trial ``number`` of :data:`LIVE_TRIALS` the way a search does, without training."""
    status, acc, macs = LIVE_TRIALS[number]
    arch = load_space("digits").sample(number)
    attrs = {
        "arch": arch.to_dict(),
        "arch_id": arch.arch_id,
        "arch_desc": arch.describe(),
        "macs": macs,
        "params": 1000 + number,
        "status": status.value,
    }
    if status == TrialStatus.COMPLETE:
        attrs["val_acc"] = acc
        trial = optuna.trial.create_trial(values=[acc, macs], user_attrs=attrs)
    elif status == TrialStatus.INFEASIBLE:
        trial = optuna.trial.create_trial(values=[0.0, macs], user_attrs=attrs)
    else:
        attrs["fail_reason"] = "loss became NaN"
        trial = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs)
    study.add_trial(trial)


def test_new_trials_appear_one_by_one_without_reload(new_tab, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/live.db")
    total = len(LIVE_TRIALS)
    study = store.create_study("live", config("live", total).record())
    with background_server(store, poll_ms=POLL_MS) as base:
        listing, search = new_tab(), new_tab()
        listing.goto(base + "/")
        row = listing.locator("#searches tbody tr", has=listing.get_by_role("link", name="live"))
        row.filter(has_text=f"0 / {total}").wait_for()
        search.goto(url(base, "/search", name="live"))
        search.wait_for_function("() => document.body.dataset.trials === '0'")
        for page in (listing, search):
            page.evaluate("() => { window.notReloaded = true; }")

        for n in range(1, total + 1):
            record_trial(study, n - 1)  # the store gains one trial while the pages are open
            count_points(search, n, timeout=UPDATE_MS)
            search.wait_for_function(
                "n => document.querySelectorAll('#trials tbody tr').length === n",
                arg=n,
                timeout=UPDATE_MS,
            )
            row.filter(has_text=f"{n} / {total}").wait_for(timeout=UPDATE_MS)
            assert search.locator(f"#trials tbody tr[data-number='{n - 1}']").count() == 1
        assert search.locator("#status").inner_text() == "done"
        assert search.locator("#trial-count").inner_text() == f"({total})"
        for page in (listing, search):
            assert page.evaluate("() => window.notReloaded") is True
            page.close()  # before the server stops, so no poll finds it gone


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
