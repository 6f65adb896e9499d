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

import fusion_nas.training.data.base as data_mod
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
    monkeypatch.setattr(data_mod, "memory_bytes", lambda: 8 * 2**30)
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


# ------------------------------------------------------------------------------- resource caps


def test_workers_above_the_hard_maximum_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    res = _search("digits", db, "--dataset", "synthetic", "--workers", "1000000")
    _check_refused(res, ["--workers", "1000000", "allowed: 1..256"])
    assert _searches(db) == []


def test_workers_are_capped_at_the_trials_and_the_cores() -> None:
    from fusion_nas.model.space import load_space
    from fusion_nas.search.config import SearchConfig, cap_workers

    space = load_space("digits")
    assert SearchConfig("w", space, "synthetic", trials=1, workers=12).workers == 1
    assert cap_workers(100, 1000, cores=2) == 8
    assert cap_workers(3, 1000, cores=2) == 3


def test_prescreen_beyond_the_memory_bound_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    res = _search("mnist1d", db, "--dataset", "synthetic", "--prescreen", "1000000000:1")
    _check_refused(res, ["--prescreen", "1,000,000,000", "allowed: K <="])
    assert _searches(db) == []


def test_prescreen_is_capped_at_the_space_size() -> None:
    from fusion_nas.model.space import parse_space
    from fusion_nas.search.config import SearchConfig
    from fusion_nas.search.prescreen import max_prescreen
    from tests.helpers.spaces import TINY

    space = parse_space(TINY)
    config = SearchConfig("p", space, "synthetic", trials=2, prescreen="5000:2")
    assert config.screening is not None and config.screening.k == space.num_architectures()
    assert max_prescreen(memory_bytes=2**30) < max_prescreen(memory_bytes=2**40)


def test_supernet_evaluations_are_capped_at_the_space_size() -> None:
    from fusion_nas.model.space import parse_space
    from fusion_nas.search.supernet import cap_evaluations
    from tests.helpers.spaces import TINY

    space = parse_space(TINY)
    assert cap_evaluations(10**20, space) == space.num_architectures() == 12
    assert cap_evaluations(5, space) == 5


# ------------------------------------------------------------------------------- bad tables


def _bad_table(tmp_path: Path, column: str, value: str) -> tuple[Path, Path]:
    """A complete table of TINY with ``value`` in ``column`` of its third data row."""
    import csv

    from fusion_nas.model.space import parse_space
    from tests.helpers.spaces import TINY
    from tests.helpers.table import plant

    table = tmp_path / "t.csv"
    plant(table, parse_space(TINY))
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0])
    rows[2][column] = value
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    space = tmp_path / "tiny.toml"
    space.write_text(TINY)
    return table, space


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("val_acc", "7.5"),
        ("val_acc", "-0.5"),
        ("val_acc", "inf"),
        ("val_acc", "nan"),
        ("macs", "-5"),
        ("params", "1.5"),
        ("seconds", "inf"),
        ("curve", "[0.5, 3]"),
    ],
)
def test_a_table_with_bad_values_is_refused_naming_row_and_column(
    tmp_path: Path, column: str, value: str
) -> None:
    table, space = _bad_table(tmp_path, column, value)
    db = tmp_path / "s.db"
    args = ["search", str(space), "--dataset", "synthetic", "--trials", "3"]
    res = runner.invoke(app, [*args, "--evaluator", f"table:{table}", "--store", f"sqlite:///{db}"])
    _check_refused(res, ["row 4", f"column {column!r}", value, "allowed"])
    assert _searches(db) == []


# ------------------------------------------------------------------------------- option pairs


def test_prescreen_with_the_grid_strategy_is_refused_before_the_store(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    res = _search("digits", db, "--dataset", "synthetic", "-s", "optuna:grid", "--prescreen", "3:2")
    _check_refused(res, ["--prescreen", "optuna:grid", "allowed"])
    assert not db.exists()


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--trial-timeout", "nan"], ["--trial-timeout", "nan", "finite"]),
        (["--trial-timeout", "inf"], ["--trial-timeout", "inf", "finite"]),
        (["--zero-cost", "foo"], ["--zero-cost", "'foo'", "'naswot'"]),
        (["--max-latency-ms", "nan"], ["--max-latency-ms", "finite"]),
        (["--lr", "nan"], ["learning rate", "finite"]),
    ],
    ids=["timeout-nan", "timeout-inf", "zero-cost-without-prescreen", "latency-nan", "lr-nan"],
)
def test_bad_values_are_refused_before_the_store(
    tmp_path: Path, extra: list[str], fragments: list[str]
) -> None:
    db = tmp_path / "s.db"
    _check_refused(_search("digits", db, "--dataset", "synthetic", *extra), fragments)
    assert not db.exists()


def test_negative_weight_decay_is_refused() -> None:
    from fusion_nas.errors import FusionNasError
    from fusion_nas.training.loop import ProxyConfig

    with pytest.raises(FusionNasError, match="weight decay must be 0 or more.*allowed"):
        ProxyConfig(weight_decay=-0.1)
    with pytest.raises(FusionNasError, match="allowed"):
        ProxyConfig(weight_decay=float("nan"))


@pytest.mark.parametrize("only", ["", " , ,"])
def test_an_empty_baseline_selection_is_refused(tmp_path: Path, only: str) -> None:
    db = tmp_path / "s.db"
    res = runner.invoke(app, ["baselines", "digits", "--only", only, "--store", f"sqlite:///{db}"])
    _check_refused(res, ["--only", "selects no baseline", "allowed"])
    assert _searches(db) == []


# ------------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding search 'one': one complete trial."""
    db = tmp_path_factory.mktemp("store") / "s.db"
    res = _search("digits", db, "--dataset", "synthetic", "--name", "one", "--trials", "1")
    assert res.exit_code == 0, res.output
    return f"sqlite:///{db}"


def _export(store: str, *args: str):
    return runner.invoke(app, ["export", "one", "--trial", "0", *args, "--store", store])


def test_export_to_the_same_file_twice_is_refused(tmp_path: Path, trained_store: str) -> None:
    out = tmp_path / "x.py"
    res = _export(trained_store, "--out", str(out), "--weights", str(out))
    _check_refused(res, ["--weights", "same file as --out", "allowed"])
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_folder_is_refused(tmp_path: Path, trained_store: str) -> None:
    (tmp_path / "d.pt").mkdir()
    res = _export(
        trained_store, "--out", str(tmp_path / "x.py"), "--weights", str(tmp_path / "d.pt")
    )
    _check_refused(res, ["--weights", "is a folder", "allowed"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt"]


def test_export_to_a_read_only_place_is_refused(tmp_path: Path, trained_store: str) -> None:
    res = _export(trained_store, "--out", "/proc/fusion-nas-x.py")
    _check_refused(res, ["--out", "cannot be written", "allowed"])


def test_retrain_to_a_read_only_place_is_refused_before_training(
    tmp_path: Path, trained_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fusion_nas.analysis.retrain as retrain_mod

    def never(*args, **kwargs):
        raise AssertionError("trained although the output cannot be written")

    monkeypatch.setattr(retrain_mod.TrainingProtocol, "retrain", never)
    for out in ("/proc/fusion-nas-retrain", str(tmp_path / "afile")):
        (tmp_path / "afile").write_text("x")
        res = runner.invoke(
            app, ["retrain", "one", "--trial", "0", "--out", out, "--store", trained_store]
        )
        _check_refused(res, ["--out", "allowed"])


def test_write_export_leaves_nothing_half_written(tmp_path: Path) -> None:
    import torch

    from fusion_nas.deploy.export import write_export
    from fusion_nas.model.build import build_model
    from fusion_nas.model.space import parse_space
    from tests.helpers.spaces import TINY

    space = parse_space(TINY)
    arch = space.enumerate()[0]
    state = build_model(arch, space).state_dict()
    out, weights = tmp_path / "m.py", tmp_path / "m.pt"
    out.write_text("old code\n")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real = torch.save
    torch.save = boom
    try:
        with pytest.raises(OSError):
            write_export(arch, space, out, state_dict=state, weights=weights)
    finally:
        torch.save = real
    assert out.read_text() == "old code\n"  # the old file is kept whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]  # no temporary left


def test_retrain_stopped_by_sigterm_says_so_in_one_line(
    trained_store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import signal

    import fusion_nas.analysis.retrain as retrain_mod
    import fusion_nas.cli.export as export_cli
    from fusion_nas.search.signals import Terminated

    def stopped(*args, **kwargs):
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(retrain_mod, "retrain", stopped)
    monkeypatch.setattr(export_cli, "retrain", stopped, raising=False)
    args = ["retrain", "one", "--trial", "0", "--out", str(tmp_path / "r")]
    res = runner.invoke(app, [*args, "--store", trained_store])
    assert res.exit_code == 143, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "SIGTERM" in lines[0], res.stderr
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------- unwritable store


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ("attempt to write a readonly database", "read-only"),
        ("database or disk is full", "disk holding the store is full"),
        ("database is locked", "locked by another process"),
    ],
)
def test_a_store_that_cannot_be_written_names_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, message: str, fragment: str
) -> None:
    import sqlalchemy.exc

    from fusion_nas.store.store import Store

    def fail(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError(
            "INSERT INTO studies", {}, sqlite3.OperationalError(message)
        )

    monkeypatch.setattr(Store, "create_study", fail)
    db = tmp_path / "s.db"
    res = _search("digits", db, "--dataset", "synthetic")
    line = _check_refused(res, ["cannot write the results store", fragment])
    assert res.exit_code == 1 and len(line) < 200
    assert _searches(db) == []


# ------------------------------------------------------------------------------- supernet resume


def test_a_resumed_confirmation_never_goes_beyond_confirm() -> None:
    from types import SimpleNamespace

    from fusion_nas.model.space import parse_space
    from fusion_nas.search.supernet import _driver
    from fusion_nas.store.records import TrialStatus
    from tests.helpers.spaces import TINY

    picks = parse_space(TINY).enumerate()[:2]
    ran: list[str] = []

    def runner_with(*history):
        return SimpleNamespace(
            history=lambda: [SimpleNamespace(arch_id=a, status=s) for a, s in history],
            evaluate=lambda arch: ran.append(arch.arch_id),
        )

    a, b = (p.arch_id for p in picks)
    # Killed while training the second pick: two trials there already, none more.
    _driver(picks).run(runner_with((a, TrialStatus.COMPLETE), (b, TrialStatus.INTERRUPTED)), 2)
    assert ran == []
    # Killed during the first: it counts; one more trial, for the pick it has not tried.
    _driver(picks).run(runner_with((a, TrialStatus.INTERRUPTED)), 2)
    assert ran == [b]
    # Lost with a heartbeat: failed, and a retry queued ("running"); both count.
    ran.clear()
    _driver(picks).run(runner_with((a, TrialStatus.FAILED), (a, TrialStatus.RUNNING)), 2)
    assert ran == []


# ------------------------------------------------------------------------------- noise


def test_error_lines_are_capped_and_keep_the_allowed_values() -> None:
    from fusion_nas.errors import MAX_LINE, FusionNasError, one_line

    line = one_line(
        FusionNasError("bad value " + "x" * 700 + "; allowed: 'a', 'b'"), limit=MAX_LINE
    )
    assert len(line) <= MAX_LINE and line.endswith("allowed: 'a', 'b'") and "\u2026" in line
    assert len(one_line(ValueError("y" * 1000), limit=MAX_LINE)) <= MAX_LINE
    assert one_line("short", limit=MAX_LINE) == "short"
    assert len(one_line("z" * 1000)) == 1000  # stored reasons are kept whole


def test_a_long_error_line_is_capped_at_the_cli(tmp_path: Path) -> None:
    from fusion_nas.errors import MAX_LINE

    db = tmp_path / "s.db"
    res = _search("digits", db, "--dataset", "synthetic", "--name", "n" * 700)
    line = _check_refused(res, ["search name", "\u2026"])
    assert len(line) <= MAX_LINE + len("Error: ")
    assert not db.exists()


def test_optuna_warnings_show_once_per_kind(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import optuna

    from fusion_nas.cli.common import quiet_optuna

    quiet_optuna()
    quiet_optuna()  # installed once
    handlers = logging.getLogger("optuna").handlers
    assert handlers
    for handler in handlers:
        assert sum(type(f).__name__ == "_OncePerKind" for f in handler.filters) == 1
    seen = []
    for handler in handlers:
        for number in range(3):
            record = logging.LogRecord(
                "optuna.x", logging.WARNING, "", 0, "Trial %d lost", (number,), None
            )
            seen.append(handler.filter(record))
    assert seen[:3] == [True, False, False]
    optuna.logging.get_logger("optuna.y")  # the library keeps working


def test_supernet_evaluations_beyond_the_space_are_capped_in_one_line(tmp_path: Path) -> None:
    from tests.helpers.spaces import TINY

    space = tmp_path / "tiny.toml"
    space.write_text(TINY)
    args = [
        "supernet", str(space), "--dataset", "synthetic", "--epochs", "1", "--confirm", "0",
        "--evaluations", str(10**20), "--train-subset", "32", "--batch-size", "16",
        "--population", "2", "--calib-batches", "1", "--device", "cpu",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if "capped" in line]
    assert len(notes) == 1 and "at 12" in notes[0], res.stderr
    assert "12 distinct networks scored" in res.output or "distinct networks" in res.output


def test_a_full_disk_while_writing_outputs_is_one_line(
    tmp_path: Path, trained_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import fusion_nas.deploy.export as export_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.py"))

    monkeypatch.setattr(export_mod, "export_code", full)
    res = _export(trained_store, "--out", str(tmp_path / "x.py"))
    line = _check_refused(res, ["x.py", "the disk is full"])
    assert res.exit_code == 1 and len(line) < 300
    assert list(tmp_path.iterdir()) == []
