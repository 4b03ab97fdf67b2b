"""The runner's log credential: a SAS for its one blob that may only create and write it.

Azure (shared keys off): a user delegation SAS, its key fetched through the real SDK client on a
fake HTTP transport (whole request asserted) and cached. Locally: the account-key SAS, tried on
Azurite against another blob and against reading.
"""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobBlock, BlobClient, UserDelegationKey, generate_blob_sas
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from loadme.context import Context
from loadme.names import log_blob_name
from loadme.settings import Settings
from loadme.storage import StorageClients
from tests.fake_arm import FakeCredential
from tests.support import RESULT_KEY

BLOB_ENDPOINT = "https://acct.blob.core.windows.net"
KEY_VALUE = base64.b64encode(b"k" * 32).decode()
OID, TID = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class _Body(io.BytesIO):
    enforce_content_length = False


def _key_info(request: requests.PreparedRequest) -> dict[str, str]:
    """The fields of a Get User Delegation Key body, which must be exactly <KeyInfo><Start/><Expiry/></KeyInfo>."""
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
    match = re.fullmatch(r"(?:<\?xml[^>]*\?>)?\s*<KeyInfo><Start>([^<]+)</Start><Expiry>([^<]+)</Expiry></KeyInfo>",
                         body.strip())
    assert match, body
    return {"Start": match[1], "Expiry": match[2]}


class FakeBlobService(BaseAdapter):  # type: ignore[misc]
    """Blob service answering Get User Delegation Key only; every other request fails the test."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(request)
        assert request.method == "POST" and request.url is not None
        assert parse_qs(urlsplit(request.url).query) == {"restype": ["service"], "comp": ["userdelegationkey"]}
        info = _key_info(request)
        reply = (f'<?xml version="1.0" encoding="utf-8"?><UserDelegationKey><SignedOid>{OID}</SignedOid>'
                 f"<SignedTid>{TID}</SignedTid><SignedStart>{info['Start']}</SignedStart>"
                 f"<SignedExpiry>{info['Expiry']}</SignedExpiry><SignedService>b</SignedService>"
                 f"<SignedVersion>2021-12-02</SignedVersion><Value>{KEY_VALUE}</Value></UserDelegationKey>")
        response = requests.Response()
        response.status_code = 200
        response.raw = _Body(reply.encode())
        response.headers = CaseInsensitiveDict({"Content-Type": "application/xml", "x-ms-request-id": "fake"})
        response.url, response.request, response.encoding = request.url, request, "utf-8"
        return response

    def close(self) -> None:
        pass


def _azure_storage() -> tuple[StorageClients, FakeBlobService]:
    settings = Settings.from_mapping({
        "EXECUTOR": "local", "AzureWebJobsStorage__accountName": "acct", "RESULT_AUTH": "identity",
        "RESULT_KEY": RESULT_KEY, "DEFAULT_IMAGE": "loadme-runner:test"})
    service = FakeBlobService()
    session = requests.Session()
    session.mount(BLOB_ENDPOINT, service)
    transport = RequestsTransport(session=session, session_owner=False)
    return StorageClients(settings, credential=FakeCredential(), transport=transport, retry_total=0), service


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_azure_mints_a_user_delegation_sas_for_the_one_blob_with_create_and_write_only() -> None:
    storage, service = _azure_storage()
    blob = log_blob_name("a" * 32, 1)
    expiry = START + timedelta(hours=2)
    sas = storage.log_write_sas(blob, START, expiry)

    [request] = service.seen
    assert request.url == f"{BLOB_ENDPOINT}/?restype=service&comp=userdelegationkey"
    assert request.headers["Authorization"] == "Bearer fake-token"  # the app's identity, no shared key
    assert _key_info(request) == {"Start": _iso(START), "Expiry": _iso(START + timedelta(days=7))}

    query = {k: v[0] for k, v in parse_qs(sas).items()}
    assert query["sp"] == "cw"  # create and write (Put Block, Put Block List): no read, list, delete, add
    assert query["sr"] == "b"  # one blob, not the container
    assert (query["st"], query["se"]) == (_iso(START), _iso(expiry))
    assert (query["skoid"], query["sktid"], query["sks"]) == (OID, TID, "b")
    assert (query["skt"], query["ske"]) == (_iso(START), _iso(START + timedelta(days=7)))
    assert not {"sdd", "srt", "ss", "si"} & set(query)  # no directory, account or policy scope
    # The signature is the delegation key's over this blob's name: another blob's would differ.
    key = UserDelegationKey()  # type: ignore[no-untyped-call]
    key.signed_oid, key.signed_tid, key.signed_service, key.signed_version = OID, TID, "b", "2021-12-02"
    key.signed_start, key.signed_expiry, key.value = query["skt"], query["ske"], KEY_VALUE

    def signed_for(name: str) -> str:
        other = generate_blob_sas("acct", "loadme-logs", name, user_delegation_key=key, permission="cw",
                                  start=START, expiry=expiry)
        return parse_qs(other)["sig"][0]

    assert query["sig"] == signed_for(blob) != signed_for(log_blob_name("a" * 32, 2))


def test_the_delegation_key_is_fetched_once_and_again_only_when_a_sas_would_outlive_it() -> None:
    storage, service = _azure_storage()
    storage.log_write_sas("r/step-001.log", START, START + timedelta(hours=1))
    storage.log_write_sas("r/step-002.log", START + timedelta(hours=3), START + timedelta(days=6))
    assert len(service.seen) == 1  # cached: the first key covers both
    later = START + timedelta(days=1)
    sas = storage.log_write_sas("r/step-003.log", later, later + timedelta(days=6, hours=12))
    assert len(service.seen) == 2  # the first key ends before this SAS would: a fresh one
    assert parse_qs(sas)["ske"] == [_iso(later + timedelta(days=7))]
    longest = storage.log_write_sas("r/step-004.log", later, later + timedelta(days=8))
    assert len(service.seen) == 2
    assert parse_qs(longest)["se"] == [_iso(later + timedelta(days=7))]  # never past its key


def _blob_with_sas(ctx: Context, blob: str, sas: str) -> BlobClient:
    return BlobClient.from_blob_url(f"{ctx.storage.log_blob_url(blob)}?{sas}")


def test_the_local_sas_writes_only_its_own_blob_and_reads_nothing(context: Context) -> None:
    now = datetime.now(UTC)
    mine, other = log_blob_name("b" * 32, 1), log_blob_name("b" * 32, 2)
    sas = context.storage.log_write_sas(mine, now - timedelta(minutes=5), now + timedelta(hours=1))
    assert re.search(r"(^|&)sp=cw(&|$)", sas) and re.search(r"(^|&)sr=b(&|$)", sas)
    own = _blob_with_sas(context, mine, sas)
    own.stage_block("0000000001", b"what the job printed\n")
    own.commit_block_list([BlobBlock("0000000001")])
    assert context.storage.logs.download_blob(mine).readall() == b"what the job printed\n"

    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as refused:
        _blob_with_sas(context, other, sas).upload_blob(b"planted", overwrite=True)
    assert refused.value.status_code == 403
    with pytest.raises(HttpResponseError) as refused:
        own.download_blob().readall()
    assert refused.value.status_code == 403
    with pytest.raises(HttpResponseError) as refused:
        own.delete_blob()
    assert refused.value.status_code == 403
    assert not context.storage.logs.get_blob_client(other).exists()
