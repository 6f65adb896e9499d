"""The results store on a real PostgreSQL server (a throwaway cluster started by the test)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.store import Store

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """Start a PostgreSQL cluster in a temporary directory; yield a URL to a fresh database."""
    pytest.importorskip("psycopg", reason="needs the postgres extra (psycopg)")
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bindirs:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    bindir = Path(bindirs[-1])
    base = Path(tempfile.mkdtemp(prefix="fusion-nas-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as 'postgres'
        base.chmod(0o755)
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(base / "log"),
        "-w",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas")
        yield f"postgresql://postgres@127.0.0.1:{port}/nas"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _search(url: str, trials: int, *extra: str):
    return runner.invoke(
        app,
        ["search", "digits", "--dataset", "synthetic", "--trials", str(trials), "--epochs", "1",
         "--name", "pg", "--store", url, *extra],
    )  # fmt: skip


def test_search_resume_and_results_on_postgresql(postgres_url: str) -> None:
    res = _search(postgres_url, 3, "--workers", "2")
    assert res.exit_code == 0, res.output
    assert "postgresql://postgres@127.0.0.1" in res.output
    df = Store(postgres_url).trials("pg")
    assert len(df) == 3 and set(df.status) == {"complete"}
    assert df.arch.map(lambda a: a["space"] == "digits").all()
    assert _search(postgres_url, 5, "--workers", "2").exit_code == 0
    assert list(Store(postgres_url).trials("pg").number) == [0, 1, 2, 3, 4]
    listing = runner.invoke(app, ["results", "--store", postgres_url])
    assert listing.exit_code == 0 and "pg" in listing.output
    store = Store(postgres_url)
    row = store.summary().set_index("name").loc["pg"]
    assert (row.requested, row.done, row.interrupted, row.running) == (5, 5, 0, 0)
    assert store.search("pg").dataset == "synthetic" and store.trial("pg", 4)["number"] == 4


def test_unreachable_postgresql_is_one_line() -> None:
    """Needs only the driver, no server: nothing listens on the port."""
    port = _free_port()
    res = runner.invoke(app, ["results", "--store", f"postgresql://postgres@127.0.0.1:{port}/x"])
    assert res.exit_code == 2
    assert "cannot open the results store" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
