"""`chatapp` command line: run the service on a local Ray, apply migrations, grant the
admin role, back up and restore the database, build and evaluate knowledge-base indexes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from chatapp.config import DatabaseSettings, Settings
from deployments.serve_env import use_serve_fast_path


def local_cpus() -> int:
    """Logical CPUs of the Ray `chatapp run` starts: one more than the machine's cores.
    The self-hosted model reserves a whole CPU and each conversation shard 0.01, so on a
    small machine what is left is fractional (0.96 of 2), and the index pipeline's tasks
    and embedding actors, which ask for one CPU each, would wait forever: an upload to a
    knowledge base was never indexed. The pipeline still runs no more embedding actors
    than there are cores (`pipelines.build_index.embedding_actors`)."""
    return (os.cpu_count() or 1) + 1


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.address is None:  # a joined cluster keeps its own Serve flags
        use_serve_fast_path()
    import ray
    from ray import serve

    from deployments.app import build_app

    overrides = json.loads(args.overrides) if args.overrides else None
    settings = Settings.from_overrides(overrides)
    ray.init(
        address=args.address,
        namespace=settings.shards.namespace,
        include_dashboard=False,
        logging_level=logging.WARNING,
        num_cpus=local_cpus() if args.address is None else None,
    )
    _index_default_kb(settings)
    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    serve.run(build_app(overrides), name="chatapp", route_prefix="/")
    url = f"http://localhost:{settings.serve.port}"
    print(f"ChatApp is serving on {url}  (OpenAI-compatible API: {url}/v1; Ctrl-C stops)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    serve.shutdown()  # type: ignore[no-untyped-call]
    return 0


def _index_default_kb(settings: Settings) -> None:
    """Build the default knowledge base (the project's docs) if missing or out of date."""
    rag = settings.rag
    if not (rag.enabled and rag.build_on_start):
        return
    sources = [s for s in rag.default_sources if "://" in s or os.path.exists(s)]
    if not sources:
        print(f"no {' / '.join(rag.default_sources)} here: default knowledge base not built")
        return
    from pipelines.build_index import build_index, index_is_current

    try:
        if index_is_current(sources, kb=rag.default_kb, rag=rag):
            return
        print(f"indexing {', '.join(sources)} into knowledge base {rag.default_kb!r}...")
        build_index(sources, kb=rag.default_kb, rag=rag, progress=print)
    except Exception as exc:  # serving without it beats not serving
        print(f"warning: knowledge base {rag.default_kb!r} not built: {exc}", file=sys.stderr)


def _index_build(args: argparse.Namespace) -> int:
    import ray

    from chatapp.errors import ChatAppError
    from pipelines.build_index import build_index

    settings = Settings()
    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        report = build_index(
            args.sources,
            kb=args.name,
            rag=settings.rag,
            full=args.full,
            skip_errors=args.skip_errors,
            progress=print,
        )
    except ChatAppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def _index_list(_args: argparse.Namespace) -> int:
    from chatapp.rag.store import store_for

    store = store_for(Settings().rag)
    for kb in store.knowledge_bases():
        m = store.manifest(kb)
        assert m is not None
        print(f"{kb}\tv{m.version}\t{m.documents} documents\t{m.chunks} chunks\t"
              f"{m.index_kind}\t{m.model}\t{m.created_at}")  # fmt: skip
    return 0


def _index_evaluate(args: argparse.Namespace) -> int:
    from pipelines.evaluate_retrieval import evaluate_knowledge_base, table

    rows = evaluate_knowledge_base(args.name, args.dataset, rag=Settings().rag)
    print(table(rows))  # dense, lexical and hybrid side by side
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from chatapp.db.engine import migrate

    settings = Settings()
    migrate(settings.database)
    print(f"database at {settings.database.resolved_url().split('@')[-1]} is up to date")
    return 0


def _admin(args: argparse.Namespace) -> int:
    """Grant, revoke or list the admin role, on the database directly (no Ray)."""
    from chatapp.auth import service
    from chatapp.auth.credentials import Revocations
    from chatapp.db.engine import make_engine, make_sessionmaker
    from chatapp.db.models import User
    from chatapp.errors import ChatAppError

    settings = Settings()

    async def work() -> list[User]:
        engine = make_engine(settings.database)
        # the same REDIS_URL as the service: its replicas drop what they cached at once
        revocations = Revocations.from_settings(settings.redis, settings.auth)
        try:
            async with make_sessionmaker(engine)() as session:
                if args.admin_command == "list":
                    return await service.list_admins(session=session)
                role: service.Role = "admin" if args.admin_command == "grant" else "user"
                user = await service.set_role(
                    session=session, revocations=revocations, email=args.email, role=role
                )
                return [user]
        finally:
            await revocations.aclose()
            await engine.dispose()

    try:
        users = asyncio.run(work())
    except ChatAppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if args.admin_command == "list":
        for user in users:
            how = "email verified" if user.email_verified else "email not verified"
            print(f"{user.email}\t{how}\t{'active' if user.is_active else 'disabled'}")
        return 0
    (user,) = users
    print(f"{user.email} is now {'an admin' if user.role == 'admin' else 'a plain user'}")
    if user.role == "user" and service.is_listed_admin(user.email, settings.auth):
        print(
            f"note: {user.email} is still in AUTH_ADMIN_EMAILS, so its next login through an "
            "OIDC provider that verifies the address makes it an admin again; remove it there"
        )
    return 0


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _backup(args: argparse.Namespace) -> int:
    """Back up the database of DATABASE_URL (only the database settings are read: the
    job needs no other secret)."""
    from chatapp.backup import BackupError, backup

    try:
        done = asyncio.run(
            backup(DatabaseSettings(), Path(args.path), keep=args.keep, pg_bin=args.pg_bin)
        )
    except BackupError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"backed up the {done.database} to {done.path} "
          f"({_size(done.size_bytes)} in {done.seconds:.1f} s)")  # fmt: skip
    for old in done.removed:
        print(f"removed the older backup {old}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from chatapp.backup import BackupError, restore

    try:
        done = asyncio.run(
            restore(DatabaseSettings(), Path(args.path), force=args.force, pg_bin=args.pg_bin)
        )
    except BackupError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"restored {done.path} into the {done.database} in {done.seconds:.1f} s")
    if done.revision != done.head:
        print(f"note: the backup's schema is at migration {done.revision}, this version's "
              f"at {done.head}: run `chatapp migrate` before starting ChatApp")  # fmt: skip
    return 0


def _pg_bin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pg-bin",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of pg_dump / pg_restore (default: PATH), e.g. /usr/lib/postgresql/16/bin",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatapp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start Ray (or join --address) and serve ChatApp")
    run.add_argument("--address", default=None, help="Ray cluster to join (default: start one)")
    run.add_argument(
        "--overrides",
        default=None,
        help='settings overrides as JSON, e.g. \'{"llm": {"engine": "simulated"}}\'',
    )
    run.set_defaults(func=_run)
    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.set_defaults(func=_migrate)
    admin = sub.add_parser(
        "admin", help="grant or revoke the admin role (on the database, from DATABASE_URL)"
    ).add_subparsers(dest="admin_command", required=True)
    for name, what in (("grant", "make EMAIL's account an admin"), ("revoke", "make it a user")):
        cmd = admin.add_parser(name, help=what)
        cmd.add_argument("email", help="the account's email")
        cmd.set_defaults(func=_admin)
    admin.add_parser("list", help="the admins, and whether their email is verified").set_defaults(
        func=_admin
    )
    bk = sub.add_parser(
        "backup",
        help="back up the database of DATABASE_URL (PostgreSQL: pg_dump custom format; "
        "SQLite: a copy through its online backup API)",
    )
    bk.add_argument("path", help="the backup file, or a folder to add a timestamped one to")
    bk.add_argument(
        "--keep",
        type=int,
        default=None,
        metavar="N",
        help="with a folder: then delete all but the newest N backups this command wrote there",
    )
    _pg_bin_option(bk)
    bk.set_defaults(func=_backup)
    rs = sub.add_parser(
        "restore", help="restore a backup into the database of DATABASE_URL (stop ChatApp first)"
    )
    rs.add_argument("path", help="a file written by `chatapp backup`")
    rs.add_argument(
        "--force", action="store_true", help="replace what the database holds (refused without)"
    )
    _pg_bin_option(rs)
    rs.set_defaults(func=_restore)
    index = sub.add_parser("index", help="knowledge-base indexes").add_subparsers(
        dest="index_command", required=True
    )
    build = index.add_parser("build", help="build or update an index (Ray Data)")
    build.add_argument("sources", nargs="+", help="folders, files or URIs (s3://, gs://, ...)")
    build.add_argument("--name", required=True, help="knowledge base name, e.g. docs")
    build.add_argument("--full", action="store_true", help="re-embed every file")
    build.add_argument("--skip-errors", action="store_true", help="leave unreadable files out")
    build.add_argument("--address", default=None, help="Ray cluster to join (default: local)")
    build.set_defaults(func=_index_build)
    index.add_parser("list", help="knowledge bases and their newest version").set_defaults(
        func=_index_list
    )
    ev = index.add_parser("evaluate", help="nDCG@10 and recall@k on a qrels dataset")
    ev.add_argument("--name", default="docs", help="knowledge base")
    ev.add_argument("--dataset", default="pipelines/data/docs-qa", help="BEIR-style folder")
    ev.set_defaults(func=_index_evaluate)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
