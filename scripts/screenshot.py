"""Make docs/dashboard.png: a real small search, the dashboard, a headless Chromium screenshot.

    python scripts/screenshot.py [--out docs/dashboard.png] [--trials 16] [--epochs 8]

Runs a search over the built-in ``digits`` space on scikit-learn's digits into a temporary
store, serves the dashboard on a free loopback port and screenshots the search page with
Playwright driving Debian's Chromium (``/usr/bin/chromium``; no ``playwright install``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

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
SEARCH = "digits-nsga2"


def make_search(store: Store, trials: int, epochs: int) -> int:
    """Run the demo search into ``store``; return its number of trials."""
    config = SearchConfig(
        name=SEARCH,
        space=load_space("digits"),
        dataset="digits",
        trials=trials,
        proxy=ProxyConfig(epochs=epochs),
        max_flops=250_000,  # a few over-budget trials show in the strip under the plot
    )
    return len(run_search(config, store))


def screenshot(url: str, out: Path, n_trials: int) -> None:
    """Open the search page at ``url`` and save a full-page screenshot to ``out``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.goto(url)
        page.wait_for_function(
            "n => document.querySelectorAll('#pareto .scatterlayer .point').length === n",
            arg=n_trials,
            timeout=30_000,
        )
        page.wait_for_selector("#operators .bars .point", timeout=30_000)
        time.sleep(0.5)  # let Plotly finish its last layout pass
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/demo.db")
        n = make_search(store, args.trials, args.epochs)
        with background_server(store) as base:
            screenshot(f"{base}/search?name={SEARCH}", args.out, n)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
