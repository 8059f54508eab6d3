"""Everything a device sends goes through here: encoded once, and on disk before it is sent.

A message is written to the durable outbox first, whether or not a broker link exists
yet (none until a broker is found, or, for a board, until it said who it is); the link
drains the outbox when it is connected and wakes when something new is queued.

``send`` encodes at once (a message that breaks the contract raises there) and leaves
the write to one writer thread, in order: the event loop never waits for the disk's
fsync (a Raspberry Pi's SD card takes milliseconds, more when it is busy).  A caller
that must know the message is on disk before it goes on (a result, before its job
says the item is done) waits for the future ``send`` returns.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

from agent.protocol.messages import Envelope, HealthMessage, encode, make
from agent.protocol.topics import DeviceTopics
from agent.transport.outbox import Outbox

logger = logging.getLogger(__name__)


class Publisher:
    def __init__(self, outbox: Outbox, topics: Optional[DeviceTopics] = None) -> None:
        self.outbox = outbox
        self.topics = topics
        #: the link's "something new is queued" (set when a link exists)
        self.wake: Callable[[], None] = lambda: None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetbench-outbox-writer")

    def bind(self, topics: DeviceTopics) -> None:
        """Speak for this device from now on (the bridge learns its board's id from HELLO)."""
        self.topics = topics

    def send(self, cls: type[Envelope], data: Any, msg_id: Optional[str] = None) -> Optional[Future[str]]:
        """Queue a ``cls`` message durably (in the writer thread); a future of its id, done once
        it is on disk, or None while there is no device to speak for.

        ProtocolError (MessageTooLarge for a message over the hubs' limit) if it breaks the
        contract: nothing is queued then.  Health samples are the first the outbox drops when
        it is full."""
        if self.topics is None:
            logger.debug("no device id yet: a %s message is not sent", cls.__name__)
            return None
        msg = make(cls, self.topics.device_id, data, msg_id)
        raw, topic = encode(msg), self.topics.topic(cls.TOPIC)
        future = self._writer.submit(self._put, msg.id, topic, raw, cls is HealthMessage)
        future.add_done_callback(_log_failure)
        return future

    def _put(self, msg_id: str, topic: str, raw: bytes, droppable: bool) -> str:
        self.outbox.put(msg_id, topic, raw, droppable=droppable)
        self.wake()
        return msg_id

    def flush(self, timeout_s: Optional[float] = None) -> None:
        """Until everything sent so far is on disk."""
        self._writer.submit(lambda: None).result(timeout_s)

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self._writer.shutdown(wait=True)


def _log_failure(future: Future[str]) -> None:
    err = future.exception()
    if err is not None:  # the disk is full or gone: the daemon goes on, the log says what was lost
        logger.error("a message could not be queued: %s", err)
