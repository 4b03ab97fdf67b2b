"""The host rules the local host imitates, each against the behaviour its source documents
(devhost modules cite the files; the cases below are the ones those sources and issues show)."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from devhost import bindings, rpc
from devhost.hostconfig import HostSettings, QueueSettings, processor_count, timespan_seconds
from devhost.http_front import ANY_METHOD, HttpFront, HttpRoute, route_pattern
from devhost.newtonsoft import looks_like_json, rewrite_json_text
from devhost.queues import Backoff
from loadme.envelope import StepMessage, StepPlan, decode
from tests.support import step_message


def _texts(data: rpc.TypedData) -> list[str]:
    return [m.decode() for m in bindings.queue_messages(data)]


# ---- queue output binding: what the host writes for each value the worker sends ----------------
def test_a_plain_string_is_one_message_unchanged() -> None:
    stamp = "2026-11-25T18:27:28.120000+00:00"
    assert _texts(rpc.TypedData(string="hello")) == ["hello"]
    assert _texts(rpc.TypedData(string=stamp)) == [stamp]  # not JSON-looking: not parsed


def test_a_json_object_string_is_rewritten_indented_with_its_timestamps_reformatted() -> None:
    """Azure/azure-functions-host#9581: the host pretty-prints a JSON string set on an output."""
    [text] = _texts(rpc.TypedData(string='{"a":"2026-11-25T18:27:28.120000+00:00","b":1.50,"c":"\\u00e9"}'))
    assert text == '{\n  "a": "2026-11-25T18:27:28.12+00:00",\n  "b": 1.5,\n  "c": "é"\n}'
    [shifted] = _texts(rpc.TypedData(string='{"t":"2026-11-25T18:27:28+05:30"}'))
    assert shifted == '{\n  "t": "2026-11-25T12:57:28+00:00"\n}'


def test_a_json_array_string_is_split_into_one_message_per_element() -> None:
    """Azure/azure-functions-python-worker#1492: '[1,2,3]' set on an output gave three messages."""
    assert _texts(rpc.TypedData(string="[1,2,3]")) == ["1", "2", "3"]
    assert _texts(rpc.TypedData(string='["x", true, null, 1.0]')) == ["x", "True", "", "1"]
    assert _texts(rpc.TypedData(string="[]")) == []


def test_invalid_json_looking_text_fails_the_output() -> None:
    with pytest.raises(ValueError):
        bindings.queue_messages(rpc.TypedData(string="{oops}"))


def test_a_list_of_strings_is_one_message_per_element_exactly_as_sent() -> None:
    envelope = '{"b":"2026-11-25T18:27:28.120000+00:00","a":1.50}'
    assert _texts(rpc.TypedData(json=json.dumps([envelope, "[1,2]"]))) == [envelope, "[1,2]"]
    assert _texts(rpc.TypedData(bytes=b'{"x": 1}')) == ['{"x": 1}']


def test_the_envelope_survives_the_hosts_rewrite_of_a_single_string() -> None:
    """The app sends lists (exact), but a message that did go through the rewrite still decodes
    to the same run, step and instants (pretty-printing and shorter fractions are harmless)."""
    created = datetime(2026, 11, 25, 18, 27, 28, 120000, tzinfo=UTC)
    message = step_message(created_at=created.isoformat(), deadline=(created + timedelta(hours=1)).isoformat(),
                           variables={"___N": "x"}, steps=(StepPlan("img", ("python", "job.py")),))
    [rewritten] = rewrite_json_text(message.to_json())
    assert rewritten != message.to_json() and "\n  " in rewritten
    again = decode(rewritten, StepMessage)
    assert (again.run_id, again.step, again.steps, again.variables) == (message.run_id, 1, message.steps, {"___N": "x"})
    assert datetime.fromisoformat(again.created_at) == created


def test_looks_like_json_is_the_hosts_is_json() -> None:
    assert looks_like_json(' {"a": 1} ') and looks_like_json("[1]")
    assert not looks_like_json('{"a": 1') and not looks_like_json("plain")


# ---- queue trigger input -----------------------------------------------------------------------
def _message(**overrides: object) -> SimpleNamespace:
    now = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    fields = {"id": "m-1", "dequeue_count": 3, "pop_receipt": "r", "inserted_on": now,
              "expires_on": now + timedelta(days=7), "next_visible_on": now + timedelta(minutes=10)}
    return SimpleNamespace(**{**fields, **overrides})


def test_queue_trigger_sends_the_body_as_a_string_and_metadata_as_the_extension_binds_it() -> None:
    trigger = bindings.queue_trigger("msg", _message(), b"plain text")
    [body] = trigger.input_data
    assert (body.name, body.data.WhichOneof("data"), body.data.string) == ("msg", "string", "plain text")
    meta = trigger.trigger_metadata
    assert meta["DequeueCount"].json == "3" and meta["Id"].string == "m-1"
    assert json.loads(meta["InsertionTime"].json) == "2026-11-25T18:00:00+00:00"
    assert meta["QueueTrigger"].string == "plain text"


def test_a_json_object_body_overrides_trigger_metadata_by_name() -> None:
    """Utility.ApplyBindingData; Azure/azure-functions-python-library#49: a body `id` replaced the id."""
    trigger = bindings.queue_trigger("msg", _message(), b'{"id": "from-body", "n": 2, "list": [1]}')
    meta = trigger.trigger_metadata
    assert meta["id"].string == "from-body" and "Id" not in meta
    assert meta["n"].string == "2" and "list" not in meta


def test_no_envelope_field_collides_with_the_queue_trigger_metadata() -> None:
    from loadme.envelope import KINDS

    names = {"schema", "kind"} | {f for kind in KINDS.values() for f in kind.__dataclass_fields__}
    assert not {n.lower() for n in names} & {m.lower() for m in bindings.QUEUE_METADATA}


def test_a_body_that_is_not_utf8_fails_the_invocation() -> None:
    with pytest.raises(ValueError, match="not valid UTF-8"):
        bindings.queue_trigger("msg", _message(), b"\xff\xfe")


# ---- HTTP ----------------------------------------------------------------------------------------
def test_http_reply_rules() -> None:
    assert bindings.http_reply(None) == bindings.HttpReply(200, {}, b"")
    reply = bindings.http_reply(rpc.TypedData(http=rpc.RpcHttp(
        status_code="202", headers={"content-type": "application/json"}, body=rpc.TypedData(bytes=b"{}"))))
    assert reply == bindings.HttpReply(202, {"content-type": "application/json"}, b"{}")
    assert bindings.http_reply(rpc.TypedData(http=rpc.RpcHttp(status_code="nope"))).status == 200


def test_routes_match_like_the_host() -> None:
    assert route_pattern("runs/{run_id}").match("RUNS/abc").groupdict() == {"run_id": "abc"}
    assert route_pattern("sleep/{seconds:int}").match("sleep/x") is None
    assert route_pattern("items/{id?}").match("items") is not None
    catch_all = route_pattern("dashboard/{*path}")
    assert catch_all.match("dashboard/js/app.js").group("path") == "js/app.js"
    assert catch_all.match("dashboard") is not None and catch_all.match("dashboardx") is None
    front = HttpFront([HttpRoute("f", "runs/{run_id}", ("GET",)), HttpRoute("g", "any", ANY_METHOD)],
                      lambda route, request: bindings.HttpReply(200, {}, b""), 0)
    assert front.match("GET", "/api/runs/1") is not None
    assert front.match("DELETE", "/api/runs/1") is None  # a method outside the list: no match (404)
    assert front.match("TRACE", "/api/any") is not None  # no `methods`: every method
    assert front.match("GET", "/runs/1") is None  # outside the route prefix


# ---- host.json and polling -------------------------------------------------------------------------
def test_host_json_defaults_follow_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0", "extensions": {"queues": {"batchSize": 8}}}))
    queues = QueueSettings.from_host_json(path, processors=2)
    assert (queues.batch_size, queues.new_batch_threshold, queues.max_dequeue_count) == (8, 8, 5)
    assert (queues.max_polling_interval, queues.visibility_timeout, queues.message_encoding) == (60.0, 0.0, "base64")
    assert HostSettings.from_host_json(path).function_timeout == 300.0
    assert processor_count({"WEBSITE_SKU": "Dynamic"}) == 1
    assert timespan_seconds("00:05:00") == 300.0 and timespan_seconds("1.00:00:01") == 86401.0


def test_the_repos_host_json_is_what_the_local_host_runs() -> None:
    settings = HostSettings.from_host_json(Path(__file__).resolve().parents[1] / "host.json")
    assert settings.function_timeout == 300.0
    assert settings.queues.max_polling_interval == 2.0 and settings.queues.max_dequeue_count == 5


def test_polling_backoff_is_the_extensions_randomized_exponential() -> None:
    backoff = Backoff(maximum=2.0, rnd=random.Random(7))
    delays = [backoff.next_delay(found_messages=False) for _ in range(8)]
    assert delays[0] == 0.1 and delays[1] == pytest.approx(0.2, rel=0.1) and delays[2] == pytest.approx(0.3, rel=0.1)
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert delays[-1] == 2.0  # capped at maxPollingInterval
    assert backoff.next_delay(found_messages=True) == 0.1  # a message found: back to the minimum
