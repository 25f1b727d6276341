"""PostgreSQL's ceiling for the SQL of a chat turn on this machine, with pgbench.

A turn writes through its shard twice (the user's message, then the reply), each time
one transaction of ChatApp's own statements (`chatapp.chat.repository.append_message`):
INSERT the message row, UPDATE the conversation's `updated_at`, COMMIT; the usage ledger
adds one row per turn, written in batches (here: one single-row INSERT per 100 turns'
worth, i.e. batches of 100). Reads are not in the script: the shards answer the prompt's
history from memory.

It makes a temporary database (migrated to head, 10,000 users with a conversation each),
runs pgbench with that script at each client count for ``--duration`` seconds, and prints
turns/s, latency per turn and the PostgreSQL backends' CPU per turn (from /proc), so
docs/capacity.md can say what one PostgreSQL core carries.

    .venv/bin/python bench/pg_ceiling.py                  # 8 and 32 clients, 20 s each
    .venv/bin/python bench/pg_ceiling.py --clients 4,16 --duration 30
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

if not __package__:  # run as `python bench/pg_ceiling.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import pg_backend_cpu_s
from bench.systems import PG_DEFAULT, temporary_pg_database
from chatapp.config import DatabaseSettings
from chatapp.db.engine import migrate

USERS = 10_000

# One chat turn: ChatApp's two append transactions, plus its share of a ledger batch.
TURN_SQL = """\\set c random(1, {users})
\\set batch random(1, 100)
BEGIN;
INSERT INTO messages (id, conversation_id, seq, role, content, status, prompt_tokens,
  completion_tokens, cost_usd, cached, created_at)
  VALUES (gen_random_uuid(), md5(:c::text)::uuid, nextval('bench_seq'), 'user',
  'a question of about twenty words, as users type them into the chat box on a page',
  'complete', 0, 0, 0, false, now());
UPDATE conversations SET updated_at = now() WHERE id = md5(:c::text)::uuid;
COMMIT;
BEGIN;
INSERT INTO messages (id, conversation_id, seq, role, content, status, finish_reason, model,
  prompt_tokens, completion_tokens, provider, cost_usd, cached, created_at)
  VALUES (gen_random_uuid(), md5(:c::text)::uuid, nextval('bench_seq'), 'assistant',
  repeat('an answer of sixty-four tokens ', 12), 'complete', 'stop', 'model', 120, 64,
  'self-hosted', 0, false, now());
UPDATE conversations SET updated_at = now() WHERE id = md5(:c::text)::uuid;
COMMIT;
\\if :batch = 1
INSERT INTO usage_events (user_id, created_at, kind, conversation_id, model, provider,
  prompt_tokens, completion_tokens, cost_usd, cached, complete)
  SELECT md5((:c + g)::text)::uuid, now(), 'chat', md5((:c + g)::text)::uuid, 'model',
  'self-hosted', 120, 64, 0, false, true FROM generate_series(0, 99) g
  WHERE :c + g <= {users};
\\endif
"""

SEED_SQL = f"""
CREATE SEQUENCE bench_seq;
INSERT INTO users (id, email, display_name, role, is_active, email_verified, created_at)
  SELECT md5(i::text)::uuid, 'pg-' || i || '@example.com', 'u' || i, 'user', true, false,
  now()
  FROM generate_series(1, {USERS}) i;
INSERT INTO conversations (id, user_id, title, created_at, updated_at)
  SELECT md5(i::text)::uuid, md5(i::text)::uuid, 'bench', now(), now()
  FROM generate_series(1, {USERS}) i;
"""


def psql(url: str, sql: str) -> None:
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql, text=True, check=True)


def run_pgbench(
    url: str, script: Path, clients: int, duration: float, dbname: str
) -> tuple[float, float, float]:
    """(transactions/s, mean latency ms, CPU seconds of the backends serving it) of one
    pgbench run; the backends exit with it, so their CPU is sampled while it runs."""
    parts = urllib.parse.urlsplit(url)
    cmd = [
        "pgbench",
        "-n",
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
        "-c",
        str(clients),
        "-j",
        str(min(clients, 2)),
        "-T",
        str(int(duration)),
        "-f",
        str(script),
        parts.path.lstrip("/"),
    ]
    before = pg_backend_cpu_s(dbname)
    seen: dict[int, float] = {}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        seen.update(pg_backend_cpu_s(dbname))
        time.sleep(0.25)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"pgbench failed: {err[-2000:]}")
    cpu = sum(v - before.get(pid, 0.0) for pid, v in seen.items())
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    return tps, latency, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=PG_DEFAULT, metavar="ADMIN_URL")
    parser.add_argument("--clients", type=lambda s: [int(v) for v in s.split(",")], default=[8, 32])
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    if shutil.which("pgbench") is None:
        print("pgbench is not installed (Debian: postgresql-client)")
        return 2
    with temporary_pg_database(args.postgres) as url, tempfile.TemporaryDirectory() as tmp:
        migrate(DatabaseSettings(url=url))
        plain = "postgresql://" + url.split("://", 1)[1]
        psql(plain, SEED_SQL)
        script = Path(tmp) / "turn.sql"
        script.write_text(TURN_SQL.format(users=USERS))
        dbname = urllib.parse.urlsplit(url).path.lstrip("/")
        print(
            f"PostgreSQL, one chat turn's SQL (2 append transactions + 1/100 of a 100-row "
            f"ledger batch), {USERS} conversations, {args.duration:g} s per row"
        )
        print(f"{'clients':>8}{'turns/s':>10}{'ms/turn':>10}{'PG CPU ms/turn':>16}")
        for clients in args.clients:
            tps, latency, cpu = run_pgbench(plain, script, clients, args.duration, dbname)
            cpu_ms = cpu * 1000 / (tps * args.duration)
            print(f"{clients:>8}{tps:>10.0f}{latency:>10.1f}{cpu_ms:>16.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
