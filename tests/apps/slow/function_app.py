"""A test app for the host's own rules: a function that overruns functionTimeout, and the worker's pid."""

from __future__ import annotations

import os
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="sleep/{seconds:int}", methods=["GET"])
def sleep(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(int(req.route_params["seconds"]))
    return func.HttpResponse("awake")


@app.route(route="pid", methods=["GET"])
def pid(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(str(os.getpid()))


@app.route(route="echo")
def echo(req: func.HttpRequest) -> func.HttpResponse:
    """No `methods`: the host routes every method here."""
    return func.HttpResponse(f"{req.method} {dict(req.params)} {req.get_body().decode()}",
                             headers={"X-Seen-Headers": ",".join(sorted(req.headers.keys()))})


@app.route(route="files/{*path}", methods=["GET"])
def files(req: func.HttpRequest) -> func.HttpResponse:
    """A catch-all route: the decoded rest of the path, whatever characters it holds."""
    return func.HttpResponse(repr(req.route_params.get("path")))
