"""The host's queue trigger: poll a Storage queue, lease each message, invoke, complete or retry.

Follows the Storage Queues extension (azure-sdk-for-net,
sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Queues, files under src/ and
src/Shared/Queues), rule by rule:
- polling (QueueListener.CreateDelayWithNotificationTask, RandomizedExponentialBackoffStrategy,
  QueuePollingIntervals): the first poll is immediate; after a poll that found messages there is no
  delay; after empty ones the delays are 100 ms, then 100 ms + rand(0.8..1.2) x 2^(k-1) x 100 ms
  (about 200, 300, 500, 900 ms...) up to `maxPollingInterval`, and 100 ms again once a message was
  found. A message
  this host adds to the queue ends the wait at once (SharedQueueWatcher.Notify). A missing queue is
  an empty poll; the listener does not create it;
- batches (QueuesOptions.NewBatchThreshold, QueueListener.WaitForNewBatchThreshold): take up to
  `batchSize` messages; poll again only once the messages in flight are `newBatchThreshold` or fewer;
- poison before invocation (QueueProcessor.BeginProcessingMessageAsync): a message whose dequeue
  count is already above `maxDequeueCount` is moved to `<queue>-poison` and not invoked;
- lease (QueueListener: `_visibilityTimeout = TimeSpan.FromMinutes(10)`,
  CreateUpdateMessageVisibilityTimer, UpdateQueueMessageVisibilityCommand): received invisible for
  the lease (10 minutes) and renewed to a full lease every half lease while the function runs; after
  a crash nothing renews it and the message comes back when the lease runs out;
- after a failure (QueueProcessor.CompleteProcessingMessageAsync): moved to poison when the dequeue
  count is `maxDequeueCount` or more, else released with `visibilityTimeout`; on success deleted;
- poison move (QueueProcessor.CopyMessageToPoisonQueueAsync): a new message with the same body in
  `<queue>-poison`, created if missing, then the original deleted;
- decoding (QueueServiceClientProvider MessageDecodingFailed handler): with `messageEncoding`
  base64, a message that is not base64 goes straight to poison, as received, without running;
- shutdown: messages in flight are completed, not abandoned.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devhost.faults import DeliveryFaults
from devhost.hostconfig import MIN_POLLING_SECONDS, QueueSettings

logger = logging.getLogger("devhost.queues")

DEFAULT_LEASE_SECONDS = 600.0
RANDOMIZATION = 0.2


class Backoff:
    """RandomizedExponentialBackoffStrategy with QueuePollingIntervals.Minimum as min and delta."""

    def __init__(self, maximum: float, rnd: random.Random | None = None) -> None:
        self.maximum = maximum
        self._current = MIN_POLLING_SECONDS
        self._exponent = 0
        self._random = rnd or random.Random()

    def next_delay(self, found_messages: bool) -> float:
        """The wait before the next poll."""
        if found_messages:
            self._current, self._exponent = MIN_POLLING_SECONDS, 1
        elif self._current != self.maximum:
            interval = MIN_POLLING_SECONDS
            if self._exponent > 0:
                factor = self._random.uniform(1 - RANDOMIZATION, 1 + RANDOMIZATION)
                interval += factor * 2 ** (self._exponent - 1) * MIN_POLLING_SECONDS
            if interval < self.maximum:
                self._current, self._exponent = interval, self._exponent + 1
            else:
                self._current = self.maximum
        return self._current


class QueueListener:
    """Listens to one queue for one function until `stop` is set."""

    def __init__(
        self,
        function_name: str,
        queue_name: str,
        client: Any,
        poison_client: Any,
        settings: QueueSettings,
        invoke: Callable[[Any, bytes], None],
        stop: threading.Event,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        faults: DeliveryFaults | None = None,
    ) -> None:
        self.function_name = function_name
        self.queue_name = queue_name
        self._client = client
        self._poison_client = poison_client
        self._settings = settings
        self._invoke = invoke
        self._stop = stop
        self._lease = lease_seconds
        self._faults = faults or DeliveryFaults()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # Host threads that wait for invocations; the worker's own thread pool runs the functions.
        self._pool = ThreadPoolExecutor(settings.batch_size + settings.new_batch_threshold,
                                        thread_name_prefix=f"queue:{function_name}")

    def notify(self) -> None:
        """This host added a message to the queue: stop waiting and poll now."""
        self._wake.set()

    def run(self) -> None:
        """Poll until stopped; then let the messages in flight finish."""
        from azure.core.exceptions import ResourceNotFoundError

        settings = self._settings
        backoff = Backoff(settings.max_polling_interval)
        found_since_delay = False
        while not self._stop.is_set():
            with self._lock:
                in_flight = self._in_flight
            if in_flight > settings.new_batch_threshold:
                self._wait(MIN_POLLING_SECONDS)
                continue
            try:
                batch = list(self._client.receive_messages(
                    messages_per_page=settings.batch_size, max_messages=settings.batch_size,
                    visibility_timeout=int(self._lease)))
            except ResourceNotFoundError:
                batch = []  # the queue does not exist (yet): an empty poll
            except Exception as exc:  # noqa: BLE001 - a storage outage must not end the listener
                logger.warning("%s: polling %s failed: %s", self.function_name, self.queue_name, exc)
                batch = []
            if batch:
                found_since_delay = True
                for message in batch:
                    with self._lock:
                        self._in_flight += 1
                    self._pool.submit(self._process, message).add_done_callback(self._done)
                continue
            self._wait(backoff.next_delay(found_since_delay))
            found_since_delay = False
        self._pool.shutdown(wait=True)

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _done(self, _: Any) -> None:
        with self._lock:
            self._in_flight -= 1
        self._wake.set()

    def _process(self, message: Any) -> None:
        try:
            self._handle(message)
        except Exception:  # a storage call of the completion failed: the lease brings the message back
            logger.exception("%s: completing message %s failed; it comes back when its lease ends",
                             self.function_name, message.id)

    def _handle(self, message: Any) -> None:
        settings = self._settings
        if message.dequeue_count > settings.max_dequeue_count:
            logger.warning("%s: message %s has reached MaxDequeueCount of %d. Moving message to queue '%s-poison'.",
                           self.function_name, message.id, settings.max_dequeue_count, self.queue_name)
            self._poison(message, message.pop_receipt)
            return
        try:
            body = base64.b64decode(message.content, validate=True) if settings.message_encoding == "base64" \
                else message.content.encode()
        except (binascii.Error, ValueError):
            logger.warning("%s: Message decoding has failed! Check MessageEncoding settings. MessageId=%s. "
                           "Moving it to '%s-poison'.", self.function_name, message.id, self.queue_name)
            self._poison(message, message.pop_receipt)
            return
        self._faults.record(self.queue_name, body)
        if self._faults.should_duplicate(message.content):
            self._client.send_message(message.content)
        lease = _Lease(self._client, message, self._lease)
        try:
            self._faults.check(self.queue_name, message.content, message.dequeue_count)
            self._invoke(message, body)
        except Exception as exc:  # noqa: BLE001 - every failure is logged and the message retried or poisoned
            receipt = lease.stop()
            logger.error("%s: message %s failed (delivery %d of %d): %s", self.function_name, message.id,
                         message.dequeue_count, settings.max_dequeue_count, exc)
            if message.dequeue_count >= settings.max_dequeue_count:
                logger.warning("%s: message %s has reached MaxDequeueCount of %d. Moving message to queue "
                               "'%s-poison'.", self.function_name, message.id, settings.max_dequeue_count,
                               self.queue_name)
                self._poison(message, receipt)
            else:
                self._client.update_message(message.id, receipt, visibility_timeout=int(settings.visibility_timeout))
            return
        self._client.delete_message(message.id, lease.stop())

    def _poison(self, message: Any, pop_receipt: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._poison_client.send_message(message.content)
        except ResourceNotFoundError:
            self._poison_client.create_queue()
            self._poison_client.send_message(message.content)
        self._client.delete_message(message.id, pop_receipt)


class _Lease:
    """Keeps a message invisible while its function runs, renewing to a full lease every half lease."""

    def __init__(self, client: Any, message: Any, lease_seconds: float) -> None:
        self._client, self._id, self._receipt = client, message.id, message.pop_receipt
        self._lease = lease_seconds
        self._done = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._renew, daemon=True, name=f"lease:{message.id[:8]}").start()

    def _renew(self) -> None:
        while not self._done.wait(self._lease / 2):
            with self._lock:
                if self._done.is_set():
                    return
                try:
                    updated = self._client.update_message(self._id, self._receipt, visibility_timeout=int(self._lease))
                    self._receipt = updated.pop_receipt
                except Exception as exc:  # noqa: BLE001 - as the extension: renewal stops, the lease ends
                    logger.warning("lease renewal of %s failed, renewal stops: %s", self._id, exc)
                    return

    def stop(self) -> str:
        """Stop renewing; returns the current pop receipt."""
        with self._lock:
            self._done.set()
            return str(self._receipt)
