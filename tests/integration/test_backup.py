"""`chatapp backup` / `chatapp restore` (issue 13) on the real PostgreSQL (pg_dump and
pg_restore of this machine) and on SQLite: a database made through ChatApp's own code
paths is backed up, lost, restored, and every conversation reads back unchanged.

Sync tests: the CLI runs its own event loop, as it does for an operator."""

from __future__ import annotations

import asyncio
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from chatapp.config import DatabaseSettings
from chatapp.db.engine import migrate
from deployments.cli import main
from tests.conftest import PG_ADMIN_URL
from tests.integration.chat_data import (
    Chats,
    can_log_in,
    conversations_as_read,
    every_row,
    populate,
)

# trust authentication ignores it, but it is in DATABASE_URL: it must show up nowhere
PASSWORD = "pw-never-printed-7Hq"


def _admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect("postgresql://" + PG_ADMIN_URL.split("://", 1)[1])
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


class Database:
    """A database of its own on the test server, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"chatapp_backup_{uuid.uuid4().hex[:10]}"
        server = PG_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]  # user@host:port
        user, host = server.split("@", 1)
        self.url = f"postgresql+asyncpg://{user}:{PASSWORD}@{host}/{self.name}"
        self.settings = DatabaseSettings(url=self.url)
        self.create()

    def create(self) -> None:
        _admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        _admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture
def pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    db = Database()
    monkeypatch.setenv("DATABASE_URL", db.url)
    yield db
    db.drop()


@pytest.fixture
def sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DatabaseSettings:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_VAR_DIR", str(tmp_path / "var"))
    return DatabaseSettings(url=None, var_dir=tmp_path / "var")


def _cli(capsys: Any, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err
    return code, out.out + out.err


def _one_more_turn(settings: DatabaseSettings) -> None:
    """A new turn and a new account on the restored database: its sequences and
    constraints came back too."""
    from chatapp.db.engine import make_engine, make_sessionmaker

    async def run() -> None:
        engine = make_engine(settings)
        chats = Chats(make_sessionmaker(engine))
        try:
            user = await chats.user("carol")
            conversation = await chats.conversation(user)
            await chats.turn(user, conversation, "still working?")
        finally:
            await chats.aclose()
            await engine.dispose()

    asyncio.run(run())


def test_postgres_backup_restores_every_conversation_unchanged(
    pg: Database, tmp_path: Path, capsys: Any
) -> None:
    migrate(pg.settings)
    made = asyncio.run(populate(pg.settings))
    rows = asyncio.run(every_row(pg.settings))
    read = asyncio.run(conversations_as_read(pg.settings))
    assert len(read) == 4 and sum(len(c["messages"]) for c in read.values()) == 14
    assert len(rows["usage_events"]) == 7 and len(rows["api_keys"]) == 1

    folder = tmp_path / "backups"
    folder.mkdir()
    code, out = _cli(capsys, "backup", str(folder))
    assert code == 0, out
    (dump,) = folder.iterdir()
    assert f"to {dump}" in out and pg.name in out
    assert dump.name.startswith("chatapp-") and dump.suffix == ".dump"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600  # it holds every account

    # the database is lost; an empty one takes its place
    pg.drop()
    pg.create()
    code, out = _cli(capsys, "restore", str(dump))
    assert code == 0, out
    assert "chatapp migrate" not in out  # the backup's schema is this version's

    assert asyncio.run(conversations_as_read(pg.settings)) == read
    assert asyncio.run(every_row(pg.settings)) == rows
    assert asyncio.run(can_log_in(pg.settings, made["emails"][0]))
    _one_more_turn(pg.settings)


def test_restore_refuses_a_database_that_holds_data_unless_forced(
    pg: Database, tmp_path: Path, capsys: Any
) -> None:
    migrate(pg.settings)
    asyncio.run(populate(pg.settings))
    backed_up = asyncio.run(every_row(pg.settings))
    dump = tmp_path / "nightly.dump"
    assert _cli(capsys, "backup", str(dump))[0] == 0

    _one_more_turn(pg.settings)  # written after the backup
    now = asyncio.run(every_row(pg.settings))
    code, out = _cli(capsys, "restore", str(dump))
    assert code != 0
    assert "holds data" in out and "--force" in out
    assert asyncio.run(every_row(pg.settings)) == now  # untouched

    code, out = _cli(capsys, "restore", "--force", str(dump))
    assert code == 0, out
    assert asyncio.run(every_row(pg.settings)) == backed_up


def test_a_missing_pg_dump_is_a_clear_error_and_writes_nothing(
    pg: Database, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, out = _cli(capsys, "backup", str(tmp_path / "x.dump"))
    assert code != 0
    assert "pg_dump not found on PATH" in out and "postgresql-client" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def _fake_pg_dump(folder: Path, *, version: int, record: Path) -> Path:
    """A pg_dump that answers --version as `version`, records how it was called, starts
    writing its file and then fails, as pg_dump does when the disk fills up."""
    folder.mkdir()
    script = folder / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) {version}.3"; exit 0; fi\n'
        f'printf "%s\\n" "$@" > "{record}/argv"\n'
        f'printf "%s" "$PGPASSWORD" > "{record}/pgpassword"\n'
        'for a in "$@"; do case "$a" in --file=*) f="${a#--file=}";; esac; done\n'
        'echo "half a dump" > "$f"\n'
        'echo "pg_dump: error: could not write to output file: No space left on device" >&2\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    return folder


def test_a_failed_pg_dump_leaves_no_backup_and_never_sees_the_password_in_argv(
    pg: Database, tmp_path: Path, capsys: Any
) -> None:
    migrate(pg.settings)
    bin_dir = _fake_pg_dump(tmp_path / "bin", version=99, record=tmp_path)
    folder = tmp_path / "backups"
    folder.mkdir()
    previous = folder / "latest.dump"
    previous.write_bytes(b"yesterday's backup")

    code, out = _cli(capsys, "backup", "--pg-bin", str(bin_dir), str(previous))
    assert code != 0
    assert "pg_dump failed" in out and "No space left on device" in out
    # yesterday's backup is whole under its name; nothing half-written beside it
    assert previous.read_bytes() == b"yesterday's backup"
    assert [p.name for p in folder.iterdir()] == ["latest.dump"]
    # the password travelled in the environment only
    assert PASSWORD not in (tmp_path / "argv").read_text()
    assert (tmp_path / "pgpassword").read_text() == PASSWORD
    assert "--format=custom" in (tmp_path / "argv").read_text().splitlines()


def test_a_pg_dump_older_than_the_server_is_refused(
    pg: Database, tmp_path: Path, capsys: Any
) -> None:
    bin_dir = _fake_pg_dump(tmp_path / "bin", version=9, record=tmp_path)
    code, out = _cli(capsys, "backup", "--pg-bin", str(bin_dir), str(tmp_path / "x.dump"))
    assert code != 0
    assert re.search(r"pg_dump is version 9, older than the server \(.*runs PostgreSQL 1\d", out)
    assert not (tmp_path / "argv").exists()  # refused before dumping anything
    assert not (tmp_path / "x.dump").exists()


def test_keep_removes_only_the_oldest_of_its_own_backups(
    pg: Database, tmp_path: Path, capsys: Any
) -> None:
    migrate(pg.settings)
    folder = tmp_path / "backups"
    folder.mkdir()
    for day in ("20200101", "20200102", "20200103"):
        (folder / f"chatapp-{day}T020000Z.dump").write_bytes(b"old")
    (folder / "notes.txt").write_text("not a backup")

    code, out = _cli(capsys, "backup", str(folder), "--keep", "2")
    assert code == 0, out
    left = sorted(p.name for p in folder.iterdir())
    assert left[0] == "chatapp-20200103T020000Z.dump" and left[-1] == "notes.txt"
    assert len(left) == 3 and left[1].startswith("chatapp-2")  # the new one
    assert out.count("removed the older backup") == 2


def test_sqlite_backup_restores_every_conversation_unchanged(
    sqlite: DatabaseSettings, tmp_path: Path, capsys: Any
) -> None:
    migrate(sqlite)
    made = asyncio.run(populate(sqlite))
    rows = asyncio.run(every_row(sqlite))
    read = asyncio.run(conversations_as_read(sqlite))
    assert len(read) == 4

    backup = tmp_path / "chatapp.sqlite3"
    code, out = _cli(capsys, "backup", str(backup))
    assert code == 0, out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("chatapp.sqlite3")] == [
        "chatapp.sqlite3"  # one self-contained file, no -wal beside it
    ]

    # refused while the database holds data
    code, out = _cli(capsys, "restore", str(backup))
    assert code != 0 and "holds data" in out

    # the database is lost
    for path in (sqlite.var_dir).iterdir():
        path.unlink()
    code, out = _cli(capsys, "restore", str(backup))
    assert code == 0, out
    assert asyncio.run(conversations_as_read(sqlite)) == read
    assert asyncio.run(every_row(sqlite)) == rows
    assert asyncio.run(can_log_in(sqlite, made["emails"][1]))

    # changed after the backup, then replaced by it with --force
    _one_more_turn(sqlite)
    assert asyncio.run(every_row(sqlite)) != rows
    assert _cli(capsys, "restore", "--force", str(backup))[0] == 0
    assert asyncio.run(every_row(sqlite)) == rows


def test_a_backup_of_the_other_kind_or_no_backup_at_all_is_refused(
    sqlite: DatabaseSettings, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(sqlite)
    backup = tmp_path / "b.sqlite3"
    assert _cli(capsys, "backup", str(backup))[0] == 0
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    code, out = _cli(capsys, "restore", str(junk))
    assert code != 0 and "neither a pg_dump custom-format file nor a SQLite file" in out

    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    code, out = _cli(capsys, "restore", str(backup))
    assert code != 0
    assert "is a sqlite backup, but DATABASE_URL names a postgresql database" in out


@pytest.fixture(autouse=True)
def _no_half_written_file_left(tmp_path: Path) -> Iterator[None]:
    yield
    assert list(tmp_path.rglob("*.part")) == []
