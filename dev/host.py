"""A local stand-in for `func start`: serves function_app.py's own registrations without Core Tools.

HTTP triggers become routes of a Starlette app served by uvicorn (the same server the Functions
Python worker uses for HTTP streaming); timer triggers run on their NCRONTAB schedules. Settings
come from local.settings.json "Values" and the environment (the environment wins).

    python -m dev.host --port 7071
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from azure.functions.timer import TimerRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dev import ncrontab

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("dev.host")


def load_local_settings(path: Path) -> None:
    if not path.exists():
        return
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


def starlette_path(route: str) -> str:
    """Functions route templates to Starlette: {*rest} catches the remainder of the path."""
    parts = []
    for part in route.strip("/").split("/"):
        if part.startswith("{*") and part.endswith("}"):
            part = "{" + part[2:-1] + ":path}"
        elif part.startswith("{") and ":" in part:
            part = part.split(":", 1)[0] + "}"  # drop Functions' type constraints
        parts.append(part)
    return "/" + "/".join(parts)


def _http_endpoint(function: Callable[..., Awaitable[Any]], arg: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        response: Response = await function(**{arg: request})
        return response

    return endpoint


def _resolve(value: str) -> str:
    """%NAME% in a binding means the app setting NAME, as the Functions host resolves it."""
    if value.startswith("%") and value.endswith("%"):
        name = value.strip("%")
        if name not in os.environ:
            raise SystemExit(
                f"app setting {name} (used by a trigger) is not set in local.settings.json or the environment"
            )
        return os.environ[name]
    return value


async def _run_timer(
    name: str, function: Callable[..., Awaitable[Any]], arg: str, schedule: str, on_start: bool
) -> None:
    parsed = ncrontab.parse(schedule)
    if on_start:
        await _invoke_timer(name, function, arg)
    while True:
        now = datetime.now(UTC)
        await asyncio.sleep((ncrontab.next_after(parsed, now) - now).total_seconds())
        await _invoke_timer(name, function, arg)


async def _invoke_timer(name: str, function: Callable[..., Awaitable[Any]], arg: str) -> None:
    try:
        await function(**{arg: TimerRequest(past_due=False)})
    except Exception as exc:  # noqa: BLE001 - the host keeps the timer alive, as the Functions host does
        log.error("timer %s failed: %s", name, type(exc).__name__)


def build(module_name: str = "function_app") -> tuple[Starlette, list[str]]:
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module(module_name)
    routes: list[Route] = []
    timers: list[tuple[str, Callable[..., Awaitable[Any]], str, str, bool]] = []
    banner: list[str] = []
    for function in module.app.get_functions():  # not idempotent: called exactly once
        trigger = function.get_trigger().get_dict_repr()
        name, user_function = function.get_function_name(), function.get_user_function()
        if trigger["type"] == "httpTrigger":
            methods = [str(getattr(m, "value", m)) for m in trigger.get("methods") or ["GET", "POST"]]
            path = starlette_path(trigger["route"] or name)
            routes.append(Route(path, _http_endpoint(user_function, trigger["name"]), methods=methods))
            banner.append(f"  {name}: [{','.join(methods)}] {trigger['route']}")
        elif trigger["type"] == "timerTrigger":
            schedule = _resolve(trigger["schedule"])
            timers.append((name, user_function, trigger["name"], schedule, bool(trigger.get("runOnStartup"))))
            banner.append(f"  {name}: timerTrigger {schedule}")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        tasks = [asyncio.create_task(_run_timer(*timer)) for timer in timers]
        yield
        for task in tasks:
            task.cancel()
        gateway = getattr(module, "gateway", None)
        if gateway is not None and hasattr(gateway, "close"):
            await gateway.close()

    return Starlette(routes=routes, lifespan=lifespan), banner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7071, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--settings", type=Path, default=ROOT / "local.settings.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log every HTTP exchange at INFO
    load_local_settings(args.settings)
    app, banner = build()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # connections queue from now on, so "Listening" is true when printed
    port = sock.getsockname()[1]
    print("Functions:\n" + "\n".join(banner), flush=True)
    print(f"Listening on http://{args.host}:{port}", flush=True)
    config = uvicorn.Config(app, log_level="warning", loop="uvloop", http="httptools", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
