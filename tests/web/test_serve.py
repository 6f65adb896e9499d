"""``fusion-nas serve`` as a user starts it: a real process on a free port, fetched over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from tests.helpers.net import free_port

START_S = 120  # a cold start imports torch, plotly and uvicorn; a loaded machine is slow


def tiny_search(store: Store, name: str, trials: int = 2) -> None:
    config = SearchConfig(
        name=name,
        space=load_space("digits"),
        dataset="synthetic",
        strategy="optuna:random",
        trials=trials,
        proxy=ProxyConfig(epochs=1),
    )
    run_search(config, store)


def q(path: str, **params: object) -> str:
    return f"{path}?{urlencode(params)}"


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Store]]:
    """``fusion-nas serve --port N`` in its own process, its store found through FUSION_NAS_HOME.

    Yields the base URL, the process and the store; stops the process afterwards.
    """
    home = tmp_path / "home"
    store = Store(f"sqlite:///{home}/fusion_nas.db")
    tiny_search(store, "first")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FUSION_NAS_STORE"}
    env.update({"FUSION_NAS_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    command = Path(sys.executable).with_name("fusion-nas")
    assert command.is_file(), f"the console script {command} is not installed"
    proc = subprocess.Popen(
        [str(command), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, f"serve exited early: {proc.stdout.read()}"
            try:
                if httpx.get(base + "/api/searches", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.2)
        yield base, proc, store
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


def test_serve_answers_over_http_then_stops_on_ctrl_c(served, tmp_path: Path) -> None:
    base, proc, store = served
    with httpx.Client(base_url=base, timeout=30) as client:
        pages = {
            "/": "<title>Searches · fusion-nas</title>",
            q("/search", name="first"): '<span id="search-name" class="name">first</span>',
            q("/trial", search="first", number=1): 'Trial 1 of <span class="name">first</span>',
        }
        for path, text in pages.items():
            page = client.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith("text/html")
            assert "Content-Security-Policy" in page.headers
            assert text in page.text, path
        assert client.get("/static/app.js").status_code == 200  # the script the pages load
        listing = client.get("/api/searches").json()
        assert [s["name"] for s in listing["searches"]] == ["first"]
        assert listing["store"] == f"sqlite:///{tmp_path}/home/fusion_nas.db"
        detail = client.get("/api/search", params={"name": "first"}).json()
        df = store.trials("first")
        assert [t["number"] for t in detail["trials"]] == [0, 1]
        assert [t["val_acc"] for t in detail["trials"]] == df.val_acc.tolist()
        trial = client.get("/api/trial", params={"search": "first", "number": 1}).json()
        assert trial["arch_desc"] == df.arch_desc[1] and trial["macs"] == df.macs[1]
        code = client.get("/download/code", params={"search": "first", "number": 1})
        assert code.status_code == 200 and "class FusionNet(nn.Module)" in code.text
        assert client.get(q("/search", name="nope")).status_code == 404
        # a search run while the server is up shows without a restart
        tiny_search(store, "second", trials=1)
        listing = client.get("/api/searches").json()
        assert [s["name"] for s in listing["searches"]] == ["first", "second"]
    proc.send_signal(signal.SIGINT)  # Ctrl+C
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), out  # a clean stop; 130 is the shell's Ctrl+C code
    assert f"at {base}/ (Ctrl+C stops)" in out and "Traceback" not in out
    with pytest.raises(httpx.TransportError):
        httpx.get(base + "/", timeout=5)
