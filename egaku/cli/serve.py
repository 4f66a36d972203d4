"""`egaku serve`: the HTTP service (native API, Stability v1, OpenAI Images, A1111 API, web studio).

    egaku serve                                   # http://127.0.0.1:7860, SQLite in $EGAKU_HOME
    egaku serve --no-auth                         # a person on their own PC: no keys, never charged
    egaku serve --host 0.0.0.0 --db postgresql://egaku@db/egaku --workers 2 --max-batch 8
"""

from __future__ import annotations

import ipaddress

from egaku.cli.common import note, quiet_libraries


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP service (native API, Stability, OpenAI Images, A1111 API, web studio)",
        description="Run egaku's HTTP service with uvicorn. Jobs and accounts live in the database "
        "(--db; default a SQLite file in $EGAKU_HOME); images in $EGAKU_HOME/images.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860, as A1111)")
    p.add_argument("--db", metavar="URL", help="database URL: sqlite:///path or postgresql://... "
                   "(default: $EGAKU_HOME/egaku.db)")
    p.add_argument("--no-auth", action="store_true",
                   help="single-user local mode: no API keys, nothing charged (keep it on loopback)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="generation worker threads (default 1; 0 = only accept jobs, for workers in "
                   "another process on the same --db)")
    p.add_argument("--no-batching", action="store_true", help="run jobs one at a time, never batched")
    p.add_argument("--max-batch", type=int, default=4, metavar="N",
                   help="compatible jobs run in one forward pass, at most N (default 4)")
    p.add_argument("--allow-private-webhooks", action="store_true",
                   help="let jobs' webhook_url reach loopback and private addresses (off: only public hosts)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(run=run)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    from egaku.errors import InvalidRequestError

    if not 1 <= args.port <= 65535:
        raise InvalidRequestError(f"port must be between 1 and 65535, got {args.port}")
    if args.workers < 0 or args.max_batch < 1:
        raise InvalidRequestError("--workers must be at least 0 and --max-batch at least 1")
    quiet_libraries()
    import uvicorn

    from egaku.jobs.service import Service, ServiceSettings
    from egaku.server import create_app

    if args.no_auth and not is_loopback(args.host):
        note(f"warning: --no-auth on {args.host}: anyone who can reach this address can generate "
             "and see every image; use API keys (drop --no-auth) or listen on 127.0.0.1")
    service = Service.create(db_url=args.db, auth=not args.no_auth, workers=args.workers,
                             batching=not args.no_batching, max_batch=args.max_batch,
                             settings=ServiceSettings(webhook_private_ok=args.allow_private_webhooks))
    app = create_app(service)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    mode = "no-auth (local single user)" if args.no_auth else "API keys required"
    # uvicorn prints the bound address once listening; this line says what it is for.
    print(f"egaku serving on http://{shown_host}:{args.port} ({mode}); API docs at /docs", flush=True)
    server.run()
    return 0 if server.started else 1

