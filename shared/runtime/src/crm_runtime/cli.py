"""The `crm` command: run the platform (`up`), one process (`serve`, `relay`, `analytics-worker`),
mint dev tokens (`token`), migrate databases, rebuild the analytics projections
(`analytics rebuild`), and read the captured mail (`mail`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import warnings
from collections.abc import Sequence

from crm_runtime.settings import Settings

# platformdirs (via pgserver) warns when XDG_RUNTIME_DIR is unset, as in containers; harmless.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def _cmd_token(args: argparse.Namespace) -> int:
    from crm_runtime.http.auth import mint_token

    settings = Settings()
    roles = [r for part in args.role for r in part.split(",") if r]
    try:
        print(mint_token(settings.jwt_secret, args.user, roles, team=args.team, ttl=args.ttl))
    except ValueError as exc:
        print(f"crm token: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from crm_runtime.services import SERVICES

    spec = SERVICES[args.service]
    settings = Settings.for_service(spec.name)
    app = spec.load_factory()(settings)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=args.port or settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
    )
    return 0


async def _serve_until_signal(main: object) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await main(stop)  # type: ignore[operator]


def _cmd_relay(args: argparse.Namespace) -> int:
    from crm_runtime import heap
    from crm_runtime.context import open_context
    from crm_runtime.logs import configure_logging
    from crm_runtime.relay import OutboxRelay
    from crm_runtime.services import SERVICES

    spec = SERVICES[args.service]
    settings = Settings.for_service(spec.name)
    configure_logging(f"{spec.name}-relay", settings.log_level)

    async def main(stop: asyncio.Event) -> None:
        ctx = await open_context(settings, [spec.migrations], pool_size=4)
        heap.settle()
        try:
            await OutboxRelay(ctx.pool, ctx.store, settings, spec.context).run(stop)
        finally:
            await ctx.close()

    asyncio.run(_serve_until_signal(main))
    return 0


def _cmd_analytics_worker(args: argparse.Namespace) -> int:
    import importlib

    from crm_runtime.logs import configure_logging

    configure_logging("analytics-worker", Settings().log_level)
    # Imported by name: the runtime library does not depend on any service package.
    importlib.import_module("crm_analytics.processor").main()
    return 0


def _cmd_analytics(args: argparse.Namespace) -> int:
    import importlib

    from crm_runtime.logs import configure_logging

    configure_logging("analytics-rebuild", Settings().log_level)
    code: int = importlib.import_module("crm_analytics.rebuild").main(args)
    return code


def _cmd_migrate(args: argparse.Namespace) -> int:
    from crm_runtime.context import open_context
    from crm_runtime.services import SERVICES

    async def main() -> None:
        for spec in SERVICES.values():
            ctx = await open_context(Settings.for_service(spec.name), [spec.migrations])
            await ctx.close()
            print(f"{spec.name}: migrated")

    asyncio.run(main())
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from crm_runtime.supervisor import up

    return up(reset=args.reset)


def build_parser() -> argparse.ArgumentParser:
    from crm_runtime.services import SERVICES

    parser = argparse.ArgumentParser(prog="crm", description="Run and operate the CRM platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="run the whole platform locally (Ctrl-C stops it)")
    p.add_argument("--reset", action="store_true", help="delete local data under .crm/ first")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("token", help="mint a development bearer token")
    p.add_argument("--role", action="append", required=True, help="role (repeat or comma-separate)")
    p.add_argument("--user", required=True, help="opaque user id (the token's sub)")
    p.add_argument("--team", help="team id, for managers and reps")
    p.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds")
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("serve", help="run one service's HTTP API")
    p.add_argument("service", choices=sorted(SERVICES))
    p.add_argument("--port", type=int)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("relay", help="run one service's outbox relay")
    p.add_argument("service", choices=sorted(s for s, v in SERVICES.items() if v.relays))
    p.set_defaults(func=_cmd_relay)

    p = sub.add_parser("analytics-worker", help="run the faust-streaming analytics processors")
    p.set_defaults(func=_cmd_analytics_worker)

    p = sub.add_parser("analytics", help="operate the analytics projections")
    analytics = p.add_subparsers(dest="analytics_command", required=True)
    r = analytics.add_parser(
        "rebuild",
        help="drop every analytics projection and rebuild it from the event history "
        "(Kafka if it holds it all, else the services' /events feeds); stop the worker first",
    )
    r.add_argument("--source", choices=("auto", "kafka", "feed"), default="auto")
    r.add_argument("--batch-size", type=int, default=500)
    r.set_defaults(func=_cmd_analytics)

    p = sub.add_parser("migrate", help="create and migrate every service's database")
    p.set_defaults(func=_cmd_migrate)

    from crm_runtime.mailcatcher import add_mail_commands

    add_mail_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
