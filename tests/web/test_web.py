"""The dashboard app (Starlette TestClient) and the ``pareto`` / ``serve`` commands."""

from __future__ import annotations

import ast
import html
import json
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from plotly.offline import get_plotlyjs
from torch import nn
from typer.testing import CliRunner

from fusion_nas.cli.app import app as cli_app
from fusion_nas.cli.pareto import default_report_path
from fusion_nas.errors import FusionNasError
from fusion_nas.evaluation import trainer as evaluate_module
from fusion_nas.model.nets import OPS, register_op
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.search.signals import USER_STOP
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.web import (
    CSP,
    DEFAULT_HOST,
    DEFAULT_PORT,
    allowed_hosts,
    bind_socket,
    create_app,
    redact_url,
)

with warnings.catch_warnings():  # starlette 1.x asks for httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

REAL = "real search/1"
XSS_NAMES = ("<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>")
HOSTILE_REASON = "<script>alert('reason')</script> & more"
HOSTILE_FAILURE = f"RuntimeError: {HOSTILE_REASON}"  # as the search records the error


def real_search(store: Store, name: str, trials: int, script: dict[int, BaseException]) -> None:
    """A tiny real search (synthetic data, one epoch) into ``store``.

    ``script`` maps the index of a training call to the error that call raises instead of
    training: what a failing network (an exception) or Ctrl-C (``KeyboardInterrupt``) does.
    """
    calls = []

    def train(*args: object, **kwargs: object) -> object:
        calls.append(len(calls))
        if calls[-1] in script:
            raise script[calls[-1]]
        return real_train(*args, **kwargs)

    real_train = evaluate_module.train_proxy
    config = SearchConfig(
        name=name,
        space=load_space("digits"),
        dataset="synthetic",
        trials=trials,
        proxy=ProxyConfig(epochs=1, train_subset=64, batch_size=64),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate_module, "train_proxy", train)
        run_search(config, store)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Real searches: one plain, and two with hostile names whose trial 1 fails with a
    hostile error message. Tests here only read it."""
    st = Store(f"sqlite:///{tmp_path_factory.mktemp('web')}/s.db")
    real_search(st, REAL, 3, {})
    for name in XSS_NAMES:
        real_search(st, name, 2, {1: RuntimeError(HOSTILE_REASON)})
        assert list(st.trials(name).status) == ["complete", "failed"]
    return st


@pytest.fixture(scope="module")
def client(store: Store) -> TestClient:
    return TestClient(create_app(store), raise_server_exceptions=False)


def q(path: str, **params: object) -> str:
    return f"{path}?{urlencode(params)}"


def page_urls(name: str) -> list[str]:
    return [
        q("/search", name=name),
        q("/trial", search=name, number=0),
        q("/api/search", name=name),
        q("/api/trial", search=name, number=0),
        q("/download/json", search=name, number=0),
        q("/download/code", search=name, number=0),
    ]


# --------------------------------------------------------------------------- routes


def test_pages_and_endpoints_answer(client: TestClient) -> None:
    for url in ["/", "/api/searches", *page_urls(REAL), "/static/app.js", "/static/style.css"]:
        r = client.get(url)
        assert r.status_code == 200, url
    r = client.get("/static/plotly.min.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert len(r.content) > 1_000_000 and b"plotly.js" in r.content[:200]


def test_search_list(client: TestClient, store: Store) -> None:
    data = client.get("/api/searches").json()
    assert [s["name"] for s in data["searches"]] == [REAL, *XSS_NAMES]
    real = data["searches"][0]
    df = store.trials(REAL)
    assert real["status"] == "done"
    assert (real["done"], real["requested"]) == (3, 3)
    assert real["best_val_acc"] == pytest.approx(df.val_acc.max())
    assert real["front_size"] == int(df.on_front.sum())
    assert real["url"] == q("/search", name=REAL)


def test_search_endpoint(client: TestClient, store: Store) -> None:
    df = store.trials(REAL)
    data = client.get(q("/api/search", name=REAL)).json()
    assert [t["number"] for t in data["trials"]] == list(df.number)
    assert [t["on_front"] for t in data["trials"]] == list(df.on_front)
    pareto = data["figures"]["pareto"]["data"]
    markers = [t for t in pareto if "markers" in t["mode"]]
    assert sum(len(t["x"]) for t in markers) == len(df)
    assert set(data["figures"]) == {"pareto", "hypervolume", "operators"}
    assert data["summary"]["knee"] in set(df.number[df.on_front])
    # Polling with the current version gets a short "unchanged" answer.
    again = client.get(q("/api/search", name=REAL, since=data["version"])).json()
    assert again == {"name": REAL, "version": data["version"], "unchanged": True}


def test_trial_endpoint(client: TestClient, store: Store) -> None:
    row = store.trial(REAL, 1)
    data = client.get(q("/api/trial", search=REAL, number=1)).json()
    assert data["arch"] == row["arch"] and data["stages"] == row["arch"]["stages"]
    assert data["macs"] == row["macs"] and data["params"] == row["params"]
    assert data["curve"] == row["curve"]
    assert data["figure"]["data"][0]["y"] == row["curve"]


def test_explain_panel_returns_the_figures_of_a_trial(client: TestClient, monkeypatch) -> None:
    page = client.get(q("/trial", search=REAL, number=0)).text
    url = q("/api/explain", search=REAL, number=0)
    assert 'id="explain-button"' in page and html.escape(url) in page
    assert '<script src="/static/explain.js">' in page
    assert client.get("/static/explain.js").status_code == 200
    data = client.get(url).json()
    assert (data["search"], data["number"]) == (REAL, 0)
    assert {"fusion", "classes", "cost", "saliency"} <= set(data["figures"])
    assert all("data" in fig and "layout" in fig for fig in data["figures"].values())
    assert "proxy training re-run" in data["source"]
    failed = client.get(q("/api/explain", search=XSS_NAMES[0], number=1))
    assert failed.status_code == 409
    assert "trial 1" in failed.json()["error"] and "no trained weights" in failed.json()["error"]
    assert client.get(q("/api/explain", search=REAL, number=99)).status_code == 404
    import fusion_nas.analysis.explain

    def no_second_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("explained twice")

    monkeypatch.setattr(fusion_nas.analysis.explain, "explain_trial", no_second_run)
    assert client.get(url).json() == data  # cached: the same answer, no second training


def test_unknown_search_and_trial_are_404(client: TestClient) -> None:
    for url in [
        q("/search", name="nope"),
        q("/api/search", name="nope"),
        q("/trial", search="nope", number=0),
        q("/trial", search=REAL, number=99),
        q("/trial", search=REAL, number="x"),
        q("/api/trial", search=REAL, number=-1),
        q("/download/code", search=REAL, number=99),
        q("/download/json", search="nope", number=0),
        "/search",
        "/trial?search=x",
        "/no/such/page",
        "/static/missing.js",
    ]:
        r = client.get(url)
        assert r.status_code == 404, url
        if url.startswith("/api/"):
            assert "error" in r.json()
        else:
            assert "text/html" in r.headers["content-type"]
    assert "no search named &#39;nope&#39;" in client.get(q("/search", name="nope")).text


def test_csp_and_nosniff_on_every_response(client: TestClient, store: Store, monkeypatch) -> None:
    responses = [client.get(u) for u in ["/", "/api/searches", *page_urls(REAL)]]
    responses += [client.get("/static/app.js"), client.get("/nope"), client.post("/")]
    responses.append(client.get(q("/search", name=XSS_NAMES[0] + "x")))

    def broken(name: str) -> None:
        raise RuntimeError("database went away")

    own = Store(store.url, create=False)  # broken below: not the store other tests read
    monkeypatch.setattr(own, "search", broken)
    error = TestClient(create_app(own), raise_server_exceptions=False).get(
        q("/api/search", name=REAL)
    )
    assert error.status_code == 500 and "database went away" not in error.text
    responses.append(error)
    assert {r.status_code for r in responses} == {200, 404, 405, 500}
    for r in responses:
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self';" in CSP and "unsafe-eval" not in CSP
    assert "frame-ancestors 'none'" in CSP and "object-src 'none'" in CSP


def test_pages_have_no_inline_script(client: TestClient) -> None:
    for url in ["/", q("/search", name=REAL), q("/trial", search=REAL, number=0), "/nope"]:
        text = client.get(url).text
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", text, flags=re.S)
        assert scripts and all('src="/static/' in attrs and not body for attrs, body in scripts)
        assert '<script src="http' not in text


def test_a_registered_operator_shows_on_the_dashboard(client: TestClient) -> None:
    @register_op("toy-dashboard", uses=())
    class ToyBlock(nn.Module):
        pass

    try:
        data = client.get(q("/api/search", name=REAL)).json()
    finally:
        del OPS["toy-dashboard"]
    all_trials, front = data["figures"]["operators"]["data"]
    stages, operators = all_trials["x"]
    assert "toy-dashboard" in operators and set(operators) >= set(OPS)
    assert len(stages) == len(operators) == len(all_trials["y"]) == len(front["y"])


def test_interrupted_trials_show_as_interrupted_not_failed(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/cut.db")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while trial 2 trains
        real_search(store, "cut short", 4, {1: RuntimeError("bad"), 2: KeyboardInterrupt()})
    client = TestClient(create_app(store))

    data = client.get(q("/api/search", name="cut short")).json()
    assert [t["status"] for t in data["trials"]] == ["complete", "failed", "interrupted"]
    row = data["trials"][2]
    assert (row["number"], row["note"]) == (2, USER_STOP)
    assert data["summary"]["interrupted"] == 1 and data["summary"]["failed"] == 1
    strip = {t["meta"]["role"]: t for t in data["figures"]["pareto"]["data"]}
    assert [2] in strip["interrupted"]["customdata"]  # its own row, not the failed one
    assert [2] not in strip["failed"]["customdata"]
    trial = client.get(q("/api/trial", search="cut short", number=2)).json()
    assert trial["status"] == "interrupted" and trial["fail_reason"] == USER_STOP
    assert client.get(q("/trial", search="cut short", number=2)).status_code == 200
    listed = client.get("/api/searches").json()["searches"]
    assert [(s["name"], s["interrupted"]) for s in listed] == [("cut short", 1)]


# --------------------------------------------------------------------------- escaping


@pytest.mark.parametrize("name", XSS_NAMES)
def test_names_are_escaped_in_html(client: TestClient, name: str) -> None:
    pages = [client.get(q("/search", name=name)), client.get(q("/trial", search=name, number=1))]
    pages.append(client.get(q("/search", name=name + "-missing")))  # the 404 page
    assert [p.status_code for p in pages] == [200, 200, 404]
    for page in pages:
        assert name not in page.text
        assert html.escape(name, quote=True) in page.text
        assert "alert(1)</script>" not in page.text and "<img src=x" not in page.text


@pytest.mark.parametrize("name", XSS_NAMES)
def test_names_are_escaped_in_json(client: TestClient, name: str) -> None:
    urls = ["/api/searches", q("/api/search", name=name), q("/api/trial", search=name, number=1)]
    urls.append(q("/api/search", name=name + "-missing"))
    for url in urls:
        r = client.get(url)
        assert r.headers["content-type"].startswith("application/json")
        assert "<" not in r.text and ">" not in r.text, url  # \u003c escapes only
        assert name in json.dumps(r.json(), ensure_ascii=False) or r.status_code == 404
    trial = client.get(q("/api/trial", search=name, number=1)).json()
    assert trial["search"] == name and trial["fail_reason"] == HOSTILE_FAILURE
    figure = client.get(q("/api/search", name=name)).json()["figures"]["pareto"]
    assert all(html.escape(name) in t["name"] for t in figure["data"])


# --------------------------------------------------------------------------- downloads


@pytest.mark.parametrize("name", [REAL, XSS_NAMES[1]])
def test_code_download_is_python(client: TestClient, store: Store, name: str) -> None:
    complete = store.trials(name)
    number = int(complete.number[complete.status == "complete"].iloc[0])
    r = client.get(q("/download/code", search=name, number=number))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/x-python")
    disposition = r.headers["content-disposition"]
    filename = re.fullmatch(r'attachment; filename="(fusion_[A-Za-z0-9._-]+_\d+\.py)"', disposition)
    assert filename, disposition
    tree = ast.parse(r.text)
    assert "FusionNet" in {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def test_json_download(client: TestClient, store: Store) -> None:
    r = client.get(q("/download/json", search=REAL, number=0))
    assert r.headers["content-disposition"] == 'attachment; filename="fusion_real_search_1_0.json"'
    record = json.loads(r.text)
    assert record["search"] == REAL and record["arch"] == store.trial(REAL, 0)["arch"]


def test_code_download_falls_back_to_json(client: TestClient, monkeypatch) -> None:
    import fusion_nas.deploy.export

    def fail(*args: object, **kwargs: object) -> str:
        raise fusion_nas.deploy.export.ExportError("cannot export this one")

    monkeypatch.setattr(fusion_nas.deploy.export, "export_code", fail)
    r = client.get(q("/download/code", search=REAL, number=0))
    assert r.status_code == 200
    assert r.headers["content-disposition"].endswith('_0.json"')
    assert json.loads(r.text)["number"] == 0


# --------------------------------------------------------------------------- serving


def _serve(store: Store, *args: str) -> subprocess.Popen:
    """``fusion-nas serve`` over ``store`` as a process of its own."""
    env = {**os.environ, "COLUMNS": "1000"}  # the address line must not wrap
    cmd = [sys.executable, "-c", "from fusion_nas.cli.app import main; main()", "serve"]
    return subprocess.Popen(
        [*cmd, "--store", store.url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_serve_listens_on_loopback_only_by_default(store: Store) -> None:
    proc = _serve(store, "--port", "0")  # no --host
    try:
        lines = []
        while not lines or "Dashboard of" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, "serve ended before it printed its address: " + "".join(lines)
            lines.append(line)
        base = re.search(r"at (http://\S+)/", lines[-1])[1]
        host, port = base.removeprefix("http://").rsplit(":", 1)
        assert host == DEFAULT_HOST == "127.0.0.1"
        listed = httpx.get(base + "/api/searches", timeout=30)
        assert listed.status_code == 200
        assert [s["name"] for s in listed.json()["searches"]] == [REAL, *XSS_NAMES]
        # Requests naming another host are refused (DNS rebinding) ...
        foreign = httpx.get(base + "/", headers={"Host": "attacker.example"}, timeout=30)
        assert foreign.status_code == 400
        # ... and the socket is bound to 127.0.0.1 alone: another loopback address of this
        # machine, which a socket bound to every interface would answer, is refused.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", int(port)), timeout=30).close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_serve_uses_port_8765_by_default(store: Store) -> None:
    try:
        held = bind_socket("127.0.0.1", DEFAULT_PORT)
    except FusionNasError:
        held = None  # something on this machine holds it already: serve must still try it
    try:
        result = CliRunner().invoke(cli_app, ["serve", "--store", store.url])
    finally:
        if held is not None:
            held.close()
    assert DEFAULT_PORT == 8765
    assert result.exit_code == 2
    assert "cannot listen on 127.0.0.1:8765" in result.output and "--port" in result.output


def test_loopback_dashboard_rejects_foreign_host_header(store: Store) -> None:
    app = create_app(store, allowed_hosts=allowed_hosts("127.0.0.1"))
    assert TestClient(app, base_url="http://127.0.0.1:8765").get("/").status_code == 200
    assert TestClient(app, base_url="http://localhost:8765").get("/").status_code == 200
    evil = TestClient(app, base_url="http://attacker.example").get("/")
    assert evil.status_code == 400 and evil.headers["content-security-policy"] == CSP
    assert "::1" in allowed_hosts("::1") and "attacker.example" not in allowed_hosts("0.0.0.0")


def test_store_passwords_stay_hidden() -> None:
    assert (
        redact_url("postgresql://ann:s3cret@db.example/nas")
        == "postgresql://ann:***@db.example/nas"
    )
    assert redact_url("sqlite:///results/fusion_nas.db") == "sqlite:///results/fusion_nas.db"


def test_bind_socket_reports_a_taken_port() -> None:
    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(FusionNasError, match=f"127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    finally:
        taken.close()


def test_serve_with_a_wrong_store_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--store", f"sqlite:///{tmp_path}/none.db"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error: no results store")
    assert len(result.output.strip().splitlines()) == 1
    bad = CliRunner().invoke(cli_app, ["serve", "--store", "nosuchdb://x"])
    assert bad.exit_code == 2 and "unsupported store URL" in bad.output


# --------------------------------------------------------------------------- pareto command


def test_pareto_command_writes_offline_html(store: Store, tmp_path: Path, monkeypatch) -> None:
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url))
    out = tmp_path / "report.html"
    args = ["pareto", REAL, XSS_NAMES[0], "--out", str(out), "--store", store.url, "--open"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    plotly_js = get_plotlyjs()
    assert plotly_js in page  # inlined, not fetched
    ours = page.replace(plotly_js, "")
    assert "<script src" not in ours and "http://" not in ours and "https://" not in ours
    assert XSS_NAMES[0] not in page and html.escape(XSS_NAMES[0]) in page
    assert opened == [out.resolve().as_uri()]


def test_pareto_default_path(store: Store, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FUSION_NAS_HOME", raising=False)
    result = CliRunner().invoke(cli_app, ["pareto", XSS_NAMES[1], "--store", store.url])
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "results").iterdir()
    assert written.name == "pareto-script_script_alert_1_script.html"
    assert default_report_path(["a b", "c/d"]) == Path("results/pareto-a_b+c_d.html")
    long = default_report_path([f"search-{i}" for i in range(40)])
    assert len(long.name) < 140 and long != default_report_path([f"s-{i}" for i in range(40)])
    # FUSION_NAS_HOME moves every result, the reports included.
    monkeypatch.setenv("FUSION_NAS_HOME", str(tmp_path / "elsewhere"))
    result = CliRunner().invoke(cli_app, ["pareto", REAL, "--store", store.url])
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "elsewhere").iterdir()
    assert written.name == "pareto-real_search_1.html"


def test_pareto_refuses_an_unwritable_out_before_reading(
    store: Store, tmp_path: Path, monkeypatch
) -> None:
    import fusion_nas.web.report as report

    def never(*args, **kw):
        raise AssertionError("the report was made before its path was checked")

    monkeypatch.setattr(report, "report_html", never)
    plain = tmp_path / "plain"
    plain.write_text("kept")
    args = ["pareto", REAL, "--out", str(plain / "r.html"), "--store", store.url]
    result = CliRunner().invoke(cli_app, args)  # (a folder as --out: Click refuses it)
    assert result.exit_code == 2, result.output
    assert "is not a folder" in result.output and len(result.output.strip().splitlines()) == 1
    assert plain.read_text() == "kept"


def test_pareto_writes_whole_or_nothing(store: Store, tmp_path: Path, monkeypatch) -> None:
    import fusion_nas.web.report as report

    out = tmp_path / "r.html"
    out.write_text("old report")

    def broken(*args, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "report_html", lambda *a, **kw: "<html>new</html>")
    monkeypatch.setattr(Path, "write_text", broken)
    result = CliRunner().invoke(cli_app, ["pareto", REAL, "--out", str(out), "--store", store.url])
    monkeypatch.undo()
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert out.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no part file left behind


def test_pareto_unknown_search_is_one_line(store: Store) -> None:
    result = CliRunner().invoke(cli_app, ["pareto", "missing", "--store", store.url])
    assert result.exit_code == 2
    assert "no search named 'missing'" in result.output
    assert len(result.output.strip().splitlines()) == 1
