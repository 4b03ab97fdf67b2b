"""A deliberately wrong app: `Out[list[str]]`, which the Functions Python worker refuses at indexing."""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="ok", methods=["GET"])
def ok(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("ok")


@app.route(route="send", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="somewhere", connection="AzureWebJobsStorage")
def send(req: func.HttpRequest, out: func.Out[list[str]]) -> func.HttpResponse:
    out.set(["a", "b"])
    return func.HttpResponse("sent")
