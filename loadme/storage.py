"""Storage clients for the app's own account: queues (base64, as the host expects), the journal
table, the logs container, and the runner's SASes (add-only on stage2, create/write on its one log
blob). Clients are created lazily, once.
"""

from __future__ import annotations

import contextlib
import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from loadme.settings import Settings

if TYPE_CHECKING:
    from azure.data.tables import TableClient
    from azure.storage.blob import BlobServiceClient, ContainerClient, UserDelegationKey
    from azure.storage.queue import QueueClient

# Development storage's well-known key and endpoints (Azurite's default ports).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEV_CONNECTION = (
    f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
    f"BlobEndpoint=http://127.0.0.1:10000/{DEV_ACCOUNT};QueueEndpoint=http://127.0.0.1:10001/{DEV_ACCOUNT};"
    f"TableEndpoint=http://127.0.0.1:10002/{DEV_ACCOUNT};"
)
# A user delegation key is valid for at most 7 days from now ("Must be within 7 days of the current
# time": Get User Delegation Key, https://learn.microsoft.com/rest/api/storageservices/get-user-delegation-key),
# and a SAS signed with it stops working when the key expires.
DELEGATION_KEY_LIFETIME = timedelta(days=7)


def parse_connection_string(conn: str) -> dict[str, str]:
    """Key/value pairs of a storage connection string; `UseDevelopmentStorage=true` expanded."""
    if conn.strip().lower().replace(" ", "") in ("usedevelopmentstorage=true", "usedevelopmentstorage=true;"):
        conn = DEV_CONNECTION
    parts = {}
    for item in conn.split(";"):
        if "=" in item:
            key, _, value = item.partition("=")
            parts[key.strip()] = value.strip()
    return parts


class StorageClients:
    """One set of clients for the app's storage account (connection string or managed identity)."""

    def __init__(self, settings: Settings, credential: Any = None, **client_options: Any) -> None:
        """`client_options` go to every SDK client (tests pass a `raw_request_hook` to count requests)."""
        self._settings = settings
        self._credential = credential
        self._options = client_options
        if settings.storage_connection_string:
            self._conn = parse_connection_string(settings.storage_connection_string)
            self.account_name = self._conn.get("AccountName", "")
        else:
            self._conn = {}
            self.account_name = settings.storage_account_name or ""
        self._delegation_key: tuple[UserDelegationKey, datetime, datetime] | None = None  # key, start, expiry

    def _endpoint(self, service: str) -> str:
        explicit = self._conn.get(f"{service.capitalize()}Endpoint")
        if explicit:
            return explicit.rstrip("/")
        suffix = self._conn.get("EndpointSuffix", "core.windows.net")
        protocol = self._conn.get("DefaultEndpointsProtocol", "https")
        return f"{protocol}://{self.account_name}.{service}.{suffix}"

    @property
    def _auth(self) -> Any:
        if self._conn.get("AccountKey"):
            return {"account_name": self.account_name, "account_key": self._conn["AccountKey"]}
        if self._credential is None:
            from loadme.credentials import default_credential

            self._credential = default_credential()
        return self._credential

    @functools.cache  # noqa: B019 - one client per queue for the life of this object
    def queue(self, name: str) -> QueueClient:
        """A client for queue `name` that base64-encodes and decodes like the Functions host."""
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        return QueueClient(
            self._endpoint("queue"), name, credential=self._auth,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(), **self._options,
        )

    def raw_queue(self, name: str) -> QueueClient:
        """A client for queue `name` that sends and reads text as is (no base64)."""
        from azure.storage.queue import QueueClient

        return QueueClient(self._endpoint("queue"), name, credential=self._auth, **self._options)

    def queue_messages_url(self, name: str) -> str:
        """The REST URL the runner posts its result to."""
        return f"{self._endpoint('queue')}/{name}/messages"

    @functools.cached_property
    def table(self) -> TableClient:
        """The journal table client."""
        from azure.data.tables import TableClient

        return TableClient(self._endpoint("table"), self._settings.journal_table, credential=self._table_credential,
                           **self._options)

    @property
    def _table_credential(self) -> Any:
        if self._conn.get("AccountKey"):
            from azure.core.credentials import AzureNamedKeyCredential

            return AzureNamedKeyCredential(self.account_name, self._conn["AccountKey"])
        return self._auth

    @functools.cached_property
    def admission(self) -> TableClient:
        """The admission control table (capacity in use, the waiting line)."""
        from azure.data.tables import TableClient

        return TableClient(self._endpoint("table"), self._settings.admission_table, credential=self._table_credential,
                           **self._options)

    @functools.cached_property
    def logs(self) -> ContainerClient:
        """The container that holds archived container logs."""
        from azure.storage.blob import ContainerClient

        return ContainerClient(self._endpoint("blob"), self._settings.logs_container, credential=self._auth,
                               **self._options)

    def add_only_sas(self, queue: str, start: datetime, expiry: datetime) -> str:
        """A SAS that may only add messages to `queue`, valid from `start` to `expiry`.

        Raises ValueError when the account has no key (identity-based connection).
        """
        from azure.storage.queue import QueueSasPermissions, generate_queue_sas

        return generate_queue_sas(self.account_name, queue, self._sas_key(),
                                  permission=QueueSasPermissions(add=True), start=start, expiry=expiry)

    def log_blob_url(self, blob: str) -> str:
        """The REST URL of a blob in the logs container (where a runner uploads its log)."""
        return f"{self._endpoint('blob')}/{self._settings.logs_container}/{blob}"

    def log_write_sas(self, blob: str, start: datetime, expiry: datetime) -> str:
        """A SAS that may only create or write the one blob `blob` in the logs container (no read,
        list, delete or other blob), valid from `start` to `expiry`.

        With the account key (local stack) it is signed with the key; without one (Azure, shared
        keys off) it is a user delegation SAS signed with a delegation key of the app's identity,
        fetched once and reused until a SAS would outlive it (so its expiry is at most 7 days
        away). `create` and `write` are what Put Block and Put Block List need (the runner keeps a
        block blob); `add` (Append Block) is left out. Raises azure.core errors when the key
        cannot be fetched.
        """
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        permission = BlobSasPermissions(create=True, write=True)
        container = self._settings.logs_container
        if self._conn.get("AccountKey"):
            return generate_blob_sas(self.account_name, container, blob, account_key=self._sas_key(),
                                     permission=permission, start=start, expiry=expiry)
        key, key_expiry = self._user_delegation_key(start, expiry)
        return generate_blob_sas(self.account_name, container, blob, user_delegation_key=key,
                                 permission=permission, start=start, expiry=min(expiry, key_expiry))

    def _user_delegation_key(self, start: datetime, expiry: datetime) -> tuple[UserDelegationKey, datetime]:
        """The cached delegation key, or a new one valid from `start` for DELEGATION_KEY_LIFETIME when
        the cached one would not cover `start` to `expiry`."""
        cached = self._delegation_key
        if cached is not None and cached[1] <= start and cached[2] >= min(expiry, start + DELEGATION_KEY_LIFETIME):
            return cached[0], cached[2]
        key_expiry = start + DELEGATION_KEY_LIFETIME  # `start` is in the past: within 7 days of now
        key = self._blob_service.get_user_delegation_key(start, key_expiry)
        self._delegation_key = (key, start, key_expiry)
        return key, key_expiry

    @functools.cached_property
    def _blob_service(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self._endpoint("blob"), credential=self._auth, **self._options)

    def _sas_key(self) -> str:
        key = self._conn.get("AccountKey")
        if not key:
            raise ValueError("a SAS needs the account key; with an identity-based connection use RESULT_AUTH=identity")
        return key

    def ensure_resources(self, queues: list[str]) -> None:
        """Create the queues, the journal table and the logs container if they are missing."""
        from azure.core.exceptions import ResourceExistsError

        for name in queues:
            with contextlib.suppress(ResourceExistsError):
                self.raw_queue(name).create_queue()
        with contextlib.suppress(ResourceExistsError):
            self.table.create_table()
        with contextlib.suppress(ResourceExistsError):
            self.admission.create_table()
        with contextlib.suppress(ResourceExistsError):
            self.logs.create_container()
