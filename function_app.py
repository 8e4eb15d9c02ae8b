"""Azure Functions entry point (Python v2 model): triggers only; the gateway does the work."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from shared.gateway import from_environment

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
gateway = from_environment()  # a configuration error still indexes every function: each answers 503 naming it
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@app.route(route="openai/{*path}", methods=METHODS)
async def openai(req: Request) -> StreamingResponse:
    return await gateway.handle(req)


@app.route(route="healthz", methods=["GET"])
async def healthz(req: Request) -> Response:
    return await gateway.healthz(req)


@app.route(route="readyz", methods=["GET"])
async def readyz(req: Request) -> Response:
    return await gateway.readyz(req)


@app.route(route="status", methods=["GET"])
async def status(req: Request) -> Response:
    return await gateway.status(req)


@app.route(route="usage", methods=["GET"])
async def usage(req: Request) -> Response:
    return await gateway.usage(req)


@app.route(route="{*path}", methods=METHODS)
async def not_found(req: Request) -> Response:
    return await gateway.not_found(req)


@app.timer_trigger(schedule="%HEALTH_PROBE_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def health_probe(timer: func.TimerRequest) -> None:
    await gateway.probe()
