"""`chatapp` command line: run the service on a local Ray, apply migrations."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from chatapp.config import Settings


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.address is None:
        # Read by Serve's processes when they start, so set before Ray starts: gRPC between
        # replicas and direct ingress cut the CPU of a chat turn by ~40%
        # (bench/chat_turn.py --flags). A joined cluster keeps its own setting.
        os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
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
    )
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


def _migrate(_args: argparse.Namespace) -> int:
    from chatapp.db.engine import migrate

    settings = Settings()
    migrate(settings.database)
    print(f"database at {settings.database.resolved_url().split('@')[-1]} is up to date")
    return 0


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
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
