"""Bad input through the real CLI: resource bombs and every error path of the store URL.

Each case must end with a non-zero exit code, one line on stderr naming the problem, no
traceback, no password in the output and nothing written to the store.
"""

from __future__ import annotations

import sqlite3
import struct
import sys
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fusion_nas.training.data as data_mod
from fusion_nas.cli.app import app
from tests.helpers.net import free_port

runner = CliRunner()
SECRET = "secretpw"

HEAD = """name = "bomb"
[input]
kind = "image"
size = [8, 8]
channels = 1
classes = 10
[stem]
width = 8
"""


def _stage(**fields: str) -> str:
    body = {"operator": '"conv"', "width": "8", **fields}
    return HEAD + "[[stage]]\n" + "".join(f"{k} = {v}\n" for k, v in body.items())


def _head(old: str, new: str, **fields: str) -> str:
    assert old in HEAD
    return _stage(**fields).replace(old, new, 1)


# (id, space file, fragments of the error line); each is refused when the file is read.
SPACE_BOMBS = [
    ("width-1e8", _stage(width="100000000"), ["stage[0].width", "100000000", "1..65536"]),
    ("width-list", _stage(width="[8, 100000000]"), ["stage[0].width", "100000000", "1..65536"]),
    ("width-float", _stage(width="1e8"), ["stage[0].width", "100000000.0", "too large"]),
    (
        "wide-stage-activations",  # 65536 channels at 64x64: 2^28 values per sample
        _head("size = [8, 8]", "size = [64, 64]", width="65536"),
        ["stage[0].width", "268,435,456 values per sample", "67,108,864"],
    ),
    (
        "mlp-activations",  # 1024 channels at 64x64, MLP 64x wider
        _head(
            "size = [8, 8]", "size = [64, 64]", operator='"attention"', width="1024", mlp_ratio="64"
        ),
        ["stage[0].width", "MLP x64", "67,108,864"],
    ),
    ("heads", _stage(operator='"attention"', heads="100000"), ["stage[0].heads", "100000"]),
    ("kernel", _stage(kernel="100001"), ["stage[0].kernel", "100001 is too large"]),
    ("depth", _stage(depth="100000"), ["stage[0].depth", "100000 is too large", "1..1024"]),
    ("mlp-ratio", _stage(mlp_ratio="1e9"), ["stage[0].mlp_ratio", "too large", "<= 64"]),
    (
        "choices",  # 400 widths x 300 depths: 120,000 choices in one stage
        _stage(width=str(list(range(8, 8 * 401, 8))), depth=str(list(range(1, 301)))),
        ["stage[0]", "120,000 distinct choices", "100,000"],
    ),
    (
        "input-size",
        _head("size = [8, 8]", "size = [65536, 65536]"),
        ["input.size", "4,294,967,296 values per sample", "67,108,864"],
    ),
    (
        "input-size-1e9",
        _head("size = [8, 8]", "size = [8, 1000000000]"),
        ["input.size", "1000000000 is too large"],
    ),
    (
        "input-length",
        _stage()
        .replace('kind = "image"\nsize = [8, 8]', 'kind = "sequence"\nlength = 65536')
        .replace("channels = 1", "channels = 4096"),
        ["input.length", "values per sample", "67,108,864"],
    ),
    ("input-channels", _head("channels = 1", "channels = 100000"), ["input.channels", "100000"]),
    ("input-classes", _head("classes = 10", "classes = 100000000"), ["input.classes", "2..65536"]),
    (
        "stem-activations",  # 4096 stem channels at 256x256
        _head("size = [8, 8]", "size = [256, 256]").replace("width = 8\n", "width = 4096\n", 1),
        ["stem.width", "268,435,456 values per sample"],
    ),
]


def _check_refused(res, fragments: list[str]) -> str:
    """The common contract of a refusal; returns the error line."""
    assert res.exit_code not in (0, None), res.output
    assert "Traceback" not in res.output and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for fragment in fragments:  # "a|b": either
        assert any(part in lines[0] for part in fragment.split("|")), (fragment, lines[0])
    assert SECRET not in res.output and SECRET not in res.stderr
    return lines[0]


def _searches(db: Path) -> list[str]:
    """Study names in an SQLite store (none if the file is absent)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return [r[0] for r in conn.execute("SELECT study_name FROM studies")]
        except sqlite3.OperationalError:  # no tables: nothing was written
            return []


def _search(space: str, db: Path, *extra: str):
    args = ["search", space, "--trials", "2", "--epochs", "1", "--train-subset", "32"]
    return runner.invoke(app, [*args, *extra, "--store", f"sqlite:///{db}"])


@pytest.mark.parametrize(
    ("text", "fragments"), [c[1:] for c in SPACE_BOMBS], ids=[c[0] for c in SPACE_BOMBS]
)
def test_space_bomb_is_refused_before_the_store(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = tmp_path / "bomb.toml"
    path.write_text(text)
    db = tmp_path / "store" / "s.db"
    line = _check_refused(_search(str(path), db, "--dataset", "synthetic"), [str(path), *fragments])
    assert "allowed" in line
    assert not db.parent.exists()  # refused while reading the file: no store at all


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (Pillow reads the size on open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _folder(tmp_path: Path, side: int) -> str:
    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        _png_header(root / "train" / cls / "x.png", 8, 8)
    _png_header(root / "train" / "a" / "huge.png", side, side)
    return f"folder:{root}"


# (id, space file, --dataset, fragments): refused while loading the data, before any trial.
DATA_BOMBS = [
    (
        "synthetic-channels",
        _head("channels = 1", "channels = 65536"),
        "synthetic",
        ["dataset 'synthetic'", "65536 channel(s)", "GiB", "allowed"],
    ),
    (
        "digits-resized",
        _head("size = [8, 8]", "size = [2048, 2048]"),
        "digits",
        ["dataset 'digits'", "size (2048, 2048)", "GiB", "allowed"],
    ),
    ("folder-huge-image", HEAD + '[[stage]]\noperator = "conv"\n', "folder:9000", ["9000x9000"]),
    (
        "folder-bomb-image",  # past Pillow's own limit: refused before decoding
        HEAD + '[[stage]]\noperator = "conv"\n',
        "folder:100000",
        ["huge.png", "too large", "67,108,864 pixels"],
    ),
]


@pytest.mark.parametrize(
    ("text", "dataset", "fragments"), [c[1:] for c in DATA_BOMBS], ids=[c[0] for c in DATA_BOMBS]
)
def test_data_bomb_is_refused_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, dataset: str, fragments: list[str]
) -> None:
    # The same answer on any machine: 8 GiB of memory.
    monkeypatch.setattr(data_mod, "_memory_bytes", lambda: 8 * 2**30)
    path = tmp_path / "bomb.toml"
    path.write_text(text)
    if dataset.startswith("folder:"):
        dataset = _folder(tmp_path, int(dataset.split(":")[1]))
    db = tmp_path / "s.db"
    _check_refused(_search(str(path), db, "--dataset", dataset), fragments)
    assert _searches(db) == []  # no search was recorded


def test_huge_run_options_still_fit(tmp_path: Path) -> None:
    # Absurd batch size and training subset are clipped to the data: one trial trains.
    db = tmp_path / "s.db"
    res = _search("digits", db, "--batch-size", str(10**15), "--dataset", "synthetic")
    assert res.exit_code == 0, res.output
    big = ["--train-subset", str(10**22), "--name", "big"]
    assert _search("digits", db, *big, "--dataset", "synthetic").exit_code == 0


# ------------------------------------------------------------------------------- store URLs


def _no_driver(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make the driver modules fail to import (as where they are not installed)."""
    for name in modules:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)


PG_DRIVERS = ("psycopg2", "psycopg")

# (id, url, fragments); "{tmp}" is the test's tmp dir, "{port}" a closed port.
STORE_URLS = [
    ("malformed", f"postgresql://u:{SECRET}@host/db:x//::", ["store"]),
    ("bad-port", f"postgresql://u:{SECRET}@host:notaport/db", ["invalid store URL", "u:***@"]),
    ("not-a-url", f"://u:{SECRET}@host/db", ["invalid store URL", "u:***@"]),
    (
        "unknown-backend",
        f"oracle://u:{SECRET}@host/db",
        ["unsupported store URL", "'oracle'", "allowed: 'sqlite', 'postgresql', 'mysql'"],
    ),
    (
        "postgres-driver-missing",
        f"postgresql://u:{SECRET}@127.0.0.1:1/db",
        ["'postgresql://u:***@127.0.0.1:1/db'", "driver", "not installed"],
    ),
    (
        "mysql-driver-missing",
        f"mysql://u:{SECRET}@127.0.0.1:1/db",
        ["'mysql://u:***@127.0.0.1:1/db'", "driver", "not installed"],
    ),
    (
        "unreachable",
        f"postgresql://u:{SECRET}@127.0.0.1:{{port}}/db",
        ["cannot open the results store", "u:***@127.0.0.1"],
    ),
    (
        "percent-encoded-password",
        "postgresql://u:secret%70w@127.0.0.1:{port}/db",
        ["cannot open the results store", "u:***@127.0.0.1"],
    ),
    ("sqlite-directory", "sqlite:///{tmp}", ["is a directory", "fusion_nas.db"]),
    (
        "sqlite-under-a-file",
        "sqlite:///{tmp}/afile/x.db",
        ["cannot create the store directory|no results store"],
    ),
    (
        "sqlite-unwritable",
        "sqlite:////proc/fusion-nas-x.db",
        ["cannot open the results store|no results store"],
    ),
    ("sqlite-not-a-database", "sqlite:///{tmp}/afile", ["file is not a database"]),
]


@pytest.mark.parametrize(
    ("url", "fragments"), [c[1:] for c in STORE_URLS], ids=[c[0] for c in STORE_URLS]
)
@pytest.mark.parametrize("command", ["search", "results"])
def test_bad_store_url_is_one_line_without_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, fragments: list[str], command: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a database, and never changed\n")
    if "driver-missing" in url or "127.0.0.1:1/" in url:
        _no_driver(monkeypatch, *PG_DRIVERS, "MySQLdb", "pymysql")
    url = url.replace("{tmp}", str(tmp_path)).replace("{port}", str(free_port()))
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["search", "digits", "--dataset", "synthetic", "--trials", "1", "--epochs", "1"]
    res = runner.invoke(app, [*(args if command == "search" else ["results"]), "--store", url])
    _check_refused(res, fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created
    assert afile.read_text() == "not a database, and never changed\n"


def test_missing_sqlite_store_is_not_created_by_a_reader(tmp_path: Path) -> None:
    db = tmp_path / "missing" / "dir" / "s.db"
    res = runner.invoke(app, ["results", "--store", f"sqlite:///{db}"])
    _check_refused(res, ["no results store", str(db)])
    assert not (tmp_path / "missing").exists()
