"""What one janitor tick costs in storage requests, with a given number of past runs in the journal.

Shared by `tests/test_operations.py` (a tick costs the same with 100 or 10,000 past runs) and the
benchmark (`bench/janitor.py`, the ratio of the two). Each request the app's storage clients send
is counted by an azure-core per-call hook, named by method and target (`GET journal()`).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from azure_functions_runtime.bindings.out import Out

from loadme.context import Context, set_context
from loadme.names import TRIGGER_QUEUES, poison_queue
from loadme.run_index import day_partition
from loadme.settings import Settings
from loadme.storage import StorageClients
from tests.support import user_function

PAST_DAY = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)  # the day the past runs were created
INSERT_THREADS = 4


def add_past_runs(ctx: Context, count: int, day: datetime) -> None:
    """`count` finished runs in the journal: each its own partition with its deciding row (`000-terminal`),
    and its row in the day's index. The run rows go as plain REST calls with one table SAS: the SDK's own
    per-request work would make 10,000 inserts take minutes on two cores."""
    import requests
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.data.tables import AccountSasPermissions, ResourceTypes, generate_account_sas

    from loadme.storage import DEV_ACCOUNT, DEV_KEY

    table = ctx.storage.table
    sas = generate_account_sas(AzureNamedKeyCredential(DEV_ACCOUNT, DEV_KEY), resource_types=ResourceTypes(object=True),
                               permission=AccountSasPermissions(add=True, write=True),
                               expiry=datetime.now(UTC) + timedelta(hours=1))
    url = f"{table.url}/{table.table_name}?{sas}"
    headers = {"Content-Type": "application/json", "Accept": "application/json;odata=nometadata",
               "Prefer": "return-no-content", "x-ms-version": "2019-02-02", "DataServiceVersion": "3.0"}
    local = threading.local()

    def one(index: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        stamp = (day + timedelta(seconds=index)).isoformat()
        row = {"PartitionKey": f"{index:032x}", "RowKey": "000-terminal", "event": "terminal", "step": 0,
               "at": stamp, "state": "succeeded", "reason": ""}
        response = session.post(url, data=json.dumps(row), headers=headers, timeout=30)
        if response.status_code != 204:
            raise RuntimeError(f"inserting past run {index}: HTTP {response.status_code} {response.text}")

    with ThreadPoolExecutor(INSERT_THREADS) as pool:
        list(pool.map(one, range(count)))
    rows = [{"PartitionKey": day_partition(day.date()), "RowKey": f"{9_000_000_000_000 - i:013d}-{i:032x}",
             "run_id": f"{i:032x}", "state": "succeeded"} for i in range(count)]
    for start in range(0, count, 100):
        table.submit_transaction([("create", row) for row in rows[start:start + 100]])


def requests_of_a_tick(settings_env: dict[str, str], past: int) -> Counter[str]:
    """The storage requests of one janitor tick (through the app's `janitor` function) a day after
    `past` runs finished, by method and target."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    settings = Settings.from_mapping(settings_env)

    def count(request: Any) -> None:
        target = request.http_request.url.split("?")[0].rsplit("/", 1)[-1]
        target = target.replace(settings.journal_table, "journal").replace(settings.admission_table, "admission")
        with lock:
            seen[f"{request.http_request.method} {target}"] += 1

    ctx = Context(settings, clock=lambda: PAST_DAY + timedelta(days=1))
    ctx.storage.ensure_resources([*TRIGGER_QUEUES, *(poison_queue(q) for q in TRIGGER_QUEUES)])
    add_past_runs(ctx, past, PAST_DAY)
    ctx.journal.index.set_oldest_day(PAST_DAY.date())
    counted = Context(settings, clock=ctx.clock, storage=StorageClients(settings, raw_request_hook=count))
    set_context(counted)
    try:
        user_function("janitor")(None, removeinfra=Out())
    finally:
        set_context(None)
    return seen
