"""Everything a device sends goes through here: encoded once, and on disk before it is sent.

A message is written to the durable outbox first, whether or not a broker link exists
yet (none until a broker is found, or, for a board, until it said who it is); the link
drains the outbox when it is connected and wakes when something new is queued.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from agent.protocol.messages import Envelope, encode, make
from agent.protocol.topics import DeviceTopics
from agent.transport.outbox import Outbox

logger = logging.getLogger(__name__)


class Publisher:
    def __init__(self, outbox: Outbox, topics: Optional[DeviceTopics] = None) -> None:
        self.outbox = outbox
        self.topics = topics
        #: the link's "something new is queued" (set when a link exists)
        self.wake: Callable[[], None] = lambda: None

    def bind(self, topics: DeviceTopics) -> None:
        """Speak for this device from now on (the bridge learns its board's id from HELLO)."""
        self.topics = topics

    def send(self, cls: type[Envelope], data: Any, msg_id: Optional[str] = None) -> Optional[str]:
        """Queue a ``cls`` message durably; its id, or None while there is no device to speak for.

        ProtocolError (MessageTooLarge for a message over the hubs' limit) if it breaks the
        contract: nothing is queued then."""
        if self.topics is None:
            logger.debug("no device id yet: a %s message is not sent", cls.__name__)
            return None
        msg = make(cls, self.topics.device_id, data, msg_id)
        self.outbox.put(msg.id, self.topics.topic(cls.TOPIC), encode(msg))
        self.wake()
        return msg.id
