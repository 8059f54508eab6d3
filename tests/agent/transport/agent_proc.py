"""A minimal agent process for kill -9 tests: an outbox and an MQTT link, nothing else.

    python agent_proc.py BROKER_URL STATE_DIR DEVICE_ID N_MESSAGES

Queues N messages with ids m0..m{N-1} (skipping ids already queued), prints
"connected" once the link is up, and runs until killed.
"""

import os
import sys
import threading

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from wire import result_data

from agent.device.publisher import Publisher
from agent.protocol.messages import ResultMessage
from agent.protocol.topics import DeviceTopics
from agent.transport.mqtt import BrokerSettings, MqttLink
from agent.transport.outbox import Outbox

url, state, device, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
outbox = Outbox(os.path.join(state, "outbox.sqlite"))
link = MqttLink(BrokerSettings.from_url(url, keepalive_s=5), DeviceTopics(device), outbox)
publisher = Publisher(outbox, DeviceTopics(device))
for i in range(n):
    publisher.send(ResultMessage, result_data(model=f"m{i}"), msg_id=f"m{i}")
publisher.flush()
link.start()
link.connected.wait(30)
print("connected", flush=True)
threading.Event().wait()
