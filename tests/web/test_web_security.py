"""The dashboard against the attacks of a security review: one test per weakness it found.

Host check from the bound address (DNS rebinding) and ``--allowed-host``; IPv6 loopback;
operator names in the operators figure; store passwords in errors; malformed trials; control
characters in search names; the model behind ``/download/code``; slow clients. Pages are
checked in Chromium (the fixtures of :mod:`tests.web.test_browser`); every crafted store is a copy
of one filled by a real tiny search, changed through Optuna's storage API.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import httpx
import optuna
import pytest
from optuna.trial import create_trial
from typer.testing import CliRunner

from fusion_nas.cli.app import app as cli_app
from fusion_nas.errors import FusionNasError, StoreError
from fusion_nas.model.space import parse_space
from fusion_nas.search.session import run_search
from fusion_nas.store.records import SEARCH_KEY
from fusion_nas.store.store import Store
from fusion_nas.web import background_server, create_app
from tests.web import test_browser as browser
from tests.web.test_browser import POLL_MS, config, count_points, url

chromium = browser.chromium  # the fixtures of the Chromium tests, shared
new_tab = browser.new_tab

with warnings.catch_warnings():  # starlette 1.x asks for httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

REAL = "reviewed"
PASSWORD = "hunter2"
SECRET_URL = f"postgresql://bob:{PASSWORD}@db.example:5432/nas"


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file filled once by a real tiny search; tests change copies of it, never it."""
    path = tmp_path_factory.mktemp("security") / "filled.db"
    run_search(config(REAL, 2), Store(f"sqlite:///{path}"))
    return path


@pytest.fixture
def store(filled_db: Path, tmp_path: Path) -> Store:
    """This test's own copy of the filled store."""
    path = tmp_path / "store.db"
    shutil.copyfile(filled_db, path)
    return Store(f"sqlite:///{path}", create=False)


def add_trial(store: Store, name: str, **attrs: object) -> int:
    """Add to search ``name`` a copy of its trial 0 with the user attributes ``attrs``
    replaced (what a hand-edited or foreign store holds); its number."""
    study = store.load_study(name)
    model = study.trials[0]
    study.add_trial(
        create_trial(
            values=model.values,
            user_attrs={**model.user_attrs, **attrs},
            params=model.params,
            distributions=model.distributions,
        )
    )
    return len(study.trials) - 1


def copy_search(store: Store, name: str, space_toml: str | None = None) -> None:
    """A copy of search ``REAL`` under ``name`` (which the CLI would refuse), by Optuna's API;
    ``space_toml`` replaces its space."""
    optuna.copy_study(
        from_study_name=REAL, from_storage=store.url, to_storage=store.url, to_study_name=name
    )
    if space_toml is not None:
        record = replace(store.search_record(name), space_toml=space_toml)
        study_id = store.storage.get_study_id_from_name(name)
        store.storage.set_study_user_attr(study_id, SEARCH_KEY, record.to_attr())


def host_status(base: str, host: str) -> int:
    return httpx.get(base + "/api/searches", headers={"Host": host}, timeout=30).status_code


# --------------------------------------------------------------------------- 1. host check


def test_host_check_follows_the_bound_address(store: Store) -> None:
    # "127.1" is 127.0.0.1: a loopback dashboard, whatever the --host text looked like.
    with background_server(store, host="127.1") as base:
        port = base.rsplit(":", 1)[1]
        assert host_status(base, "evil.example") == 400  # DNS rebinding
        assert host_status(base, f"evil.example:{port}") == 400
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.1"):
            assert host_status(base, host) == 200, host
    # Every interface: only the loopback names and those given deliberately are answered.
    with background_server(store, host="0.0.0.0", extra_hosts=["NAS.example."]) as base:
        port = base.rsplit(":", 1)[1]
        local = f"http://127.0.0.1:{port}"
        assert host_status(local, "evil.example") == 400
        assert host_status(local, f"0.0.0.0:{port}") == 400
        assert host_status(local, f"nas.example:{port}") == 200
        assert host_status(local, f"127.0.0.1:{port}") == 200


def test_serve_allowed_host_option(store: Store) -> None:
    bad = CliRunner().invoke(cli_app, ["serve", "--store", store.url, "--allowed-host", "nas:80"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert "--allowed-host 'nas:80' is not a host name" in bad.output and "(no port)" in bad.output
    env = {**os.environ, "COLUMNS": "1000"}
    cmd = [sys.executable, "-c", "from fusion_nas.cli.app import main; main()", "serve"]
    args = ["--store", store.url, "--host", "0.0.0.0", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, *args, "--allowed-host", "nas.example", "--allowed-host", "10.1.2.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        while not lines or "Answers requests for host" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, "serve ended before it printed its hosts: " + "".join(lines)
            lines.append(line)
        out = "".join(lines)
        assert "Warning: listening on 0.0.0.0" in out
        assert lines[-1].strip().endswith("localhost, 127.0.0.1, ::1, nas.example, 10.1.2.3")
        port = re.search(r"at http://0\.0\.0\.0:(\d+)/", out)[1]
        local = f"http://127.0.0.1:{port}"
        assert host_status(local, "nas.example") == 200
        assert host_status(local, f"10.1.2.3:{port}") == 200
        assert host_status(local, "attacker.example") == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


# --------------------------------------------------------------------------- 2. IPv6


def test_ipv6_loopback_dashboard_answers_its_own_url(store: Store, new_tab) -> None:
    with background_server(store, host="::1", poll_ms=POLL_MS) as base:
        assert base.startswith("http://[::1]:")
        assert host_status(base, "evil.example") == 400
        page = new_tab()
        page.goto(base + "/")
        page.get_by_role("link", name=REAL, exact=True).click()
        page.wait_for_url(url(base, "/search", name=REAL))
        count_points(page, 2)
        page.close()  # before the server stops


# --------------------------------------------------------------------------- 3. operators


LINK_OP = '<a href="https://evil.example/">click me</a>'


def test_operator_names_stay_text_in_the_operators_figure(store: Store, new_tab) -> None:
    arch = store.trial(REAL, 0)["arch"]
    stages = [{**arch["stages"][0], "operator": LINK_OP}, *arch["stages"][1:]]
    add_trial(store, REAL, arch={**arch, "stages": stages})
    with background_server(store, poll_ms=POLL_MS) as base:
        page = new_tab()
        page.goto(url(base, "/search", name=REAL))
        count_points(page, 3)
        page.locator("#operators .xtick").first.wait_for()
        drawn = page.evaluate("() => document.getElementById('operators').textContent")
        assert LINK_OP in drawn  # shown as the text it is ...
        assert page.locator('#operators [href*="evil.example"]').count() == 0  # ... not a link
        page.close()


# --------------------------------------------------------------------------- 4. store errors


def test_serve_never_prints_the_store_password() -> None:
    port_free = socket.socket()
    port_free.bind(("127.0.0.1", 0))
    port = port_free.getsockname()[1]
    port_free.close()  # nothing listens there: the store cannot be opened
    for url_ in (
        f"postgresql://bob:{PASSWORD}@127.0.0.1:{port}/nas",
        f"nosuchdb://bob:{PASSWORD}@x/y",
    ):
        result = CliRunner().invoke(cli_app, ["serve", "--store", url_])
        assert result.exit_code == 2, result.output
        assert PASSWORD not in result.output and "bob:***@" in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_store_error_during_a_poll_hides_the_password(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(store, "url", SECRET_URL)  # as if served from that server
    # the dashboard's own log, read from its logger: the root logger's handlers depend on
    # what earlier tests in this process configured (NNI's experiment sets up logging)
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)
    logging.getLogger("fusion_nas.web").addHandler(handler)

    def lost(*args: object) -> None:  # the connection drops while the page polls
        raise StoreError(f"lost the results store {SECRET_URL!r}: server closed the connection")

    monkeypatch.setattr(store, "summaries", lost)
    monkeypatch.setattr(store, "search", lambda name: 1 / 0)  # not a FusionNasError
    with caplog.at_level(logging.WARNING), background_server(store) as base:
        polled = httpx.get(base + "/api/searches", timeout=30)
        crashed = httpx.get(base + "/api/search", params={"name": REAL}, timeout=30)
    assert polled.status_code == 500 and crashed.status_code == 500
    assert polled.json()["error"] == (
        "lost the results store 'postgresql://bob:***@db.example:5432/nas': "
        "server closed the connection"
    )
    printed = capfd.readouterr()
    logging.getLogger("fusion_nas.web").removeHandler(handler)
    logs = caplog.text + printed.out + printed.err + seen.getvalue()  # the app's log, uvicorn's
    assert "dashboard error on /api/searches" in logs and "ZeroDivisionError" in logs
    assert "bob:***@db.example" in logs
    assert PASSWORD not in logs + polled.text + crashed.text


# --------------------------------------------------------------------------- 5. bad trials


def test_a_malformed_trial_is_flagged_not_fatal(store: Store, new_tab) -> None:
    bad = add_trial(store, REAL, val_acc="abc", duplicate_of="seven", arch=["not", "an", "arch"])
    curve = add_trial(store, REAL, curve=5)  # the rest of this one is fine
    with TestClient(create_app(store)) as client:
        assert client.get("/api/searches").status_code == 200
    with background_server(store, poll_ms=POLL_MS) as base:
        page = new_tab()
        page.goto(base + "/")
        row = page.locator("#searches tbody tr", has=page.get_by_role("link", name=REAL))
        row.filter(has_text="4 / 2").wait_for()  # listed, every trial counted
        page.goto(url(base, "/search", name=REAL))
        count_points(page, 4)
        note = page.locator(f"#trials tbody tr[data-number='{bad}'] td.note-cell")
        assert "malformed record" in note.inner_text() and "'abc'" in note.inner_text()
        status = page.locator(f"#trials tbody tr[data-number='{bad}'] .badge").inner_text()
        assert status == "failed"  # no accuracy to draw: in the failed row, flagged
        note = page.locator(f"#trials tbody tr[data-number='{curve}'] td.note-cell")
        assert "curve=5" in note.inner_text()
        page.goto(url(base, "/trial", search=REAL, number=bad))
        page.locator("#note", has_text="malformed record").wait_for()
        page.close()


# --------------------------------------------------------------------------- 6. control chars


@pytest.mark.parametrize("name", ["cr\rname", "nul\x00name", "tab\tname", "nel\x85name"])
def test_names_with_control_characters_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(FusionNasError, match=re.escape(repr(name))):
        config(name, 1)
    store_url = f"sqlite:///{tmp_path}/s.db"
    args = ["search", "digits", "--dataset", "synthetic", "--trials", "1", "--epochs", "1"]
    result = CliRunner().invoke(cli_app, [*args, "--name", name, "--store", store_url])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: search name {name!r} has control characters (CR, NUL)"
    )
    assert Store(store_url).search_names() == []


def test_control_characters_already_stored_are_harmless(store: Store, new_tab) -> None:
    names = ["cr\rname", "crlf\r\nname", "nul\x00name"]  # stored by an older version
    for name in names:
        copy_search(store, name)
    with background_server(store, poll_ms=POLL_MS) as base:
        for name in names:
            page = new_tab()  # a 404 from any poll is a console error: the test fails
            page.goto(url(base, "/search", name=name))
            count_points(page, 2)
            page.wait_for_function(  # several polls later, still answered
                "() => document.getElementById('live').textContent.startsWith('updated')"
            )
            page.goto(url(base, "/trial", search=name, number=1))
            page.locator("#stages tbody tr").first.wait_for()
            page.close()


# --------------------------------------------------------------------------- 7. model size


BIG_WIDTH = 6000  # about 290 million parameters: over 1 GB if the model were built

DOWNLOAD = textwrap.dedent(
    """
    import json, resource, sys, warnings
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
    from fusion_nas.store.store import Store
    from fusion_nas.web import create_app

    client = TestClient(create_app(Store(sys.argv[1], create=False)))
    client.get("/api/searches")  # everything imported, caches warm
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = client.get("/download/code", params={"search": "big", "number": sys.argv[2]})
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"status": r.status_code, "type": r.headers["content-type"],
                      "text": r.text, "grown_mb": (after - before) / 1024}))
    """
)


def test_code_download_of_a_huge_model_does_not_build_it(store: Store) -> None:
    record = store.search_record(REAL)
    toml = re.sub(r"(?m)^width = \d+$", f"width = {BIG_WIDTH}", record.space_toml)
    space = parse_space(toml, source="<big>")
    copy_search(store, "big", space_toml=toml)
    arch = space.enumerate()[0]
    number = add_trial(store, "big", arch=arch.to_dict(), status="infeasible")
    out = subprocess.run(
        [sys.executable, "-c", DOWNLOAD, store.url, str(number)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["type"].startswith("text/x-python")
    assert "class FusionNet(nn.Module)" in result["text"] and f"{BIG_WIDTH}" in result["text"]
    assert result["grown_mb"] < 400  # the weights alone would be over 1,100 MB


# --------------------------------------------------------------------------- 8. slow clients


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock``: read to its end (a long ceiling, not a timing)."""
    sock.settimeout(60)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_half_open_connections_are_closed(store: Store) -> None:
    with background_server(store, header_timeout=0.5) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        address = (host, int(port))
        with socket.create_connection(address) as silent:  # connects, sends nothing
            assert closed_by_server(silent)
        with socket.create_connection(address) as slow:  # a header that never ends
            slow.sendall(b"GET /api/searches HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: 1\r\n")
            assert closed_by_server(slow)
        with socket.create_connection(address) as kept:  # a full request, then half of one
            kept.sendall(b"GET /api/searches HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            kept.settimeout(60)
            assert kept.recv(12) == b"HTTP/1.1 200"  # the rest is read to the end below
            kept.sendall(b"GET / HTTP/1.1\r\n")
            assert closed_by_server(kept)
        # The server still answers whoever asks properly.
        assert httpx.get(base + "/api/searches", timeout=30).status_code == 200
