"""faust's aiokafka transport with the consumer's fetch wait taken from our settings.

faust fixes ``fetch_max_wait_ms`` at 1500 ms. Real Kafka answers a waiting fetch as soon as records
arrive, so that costs nothing there; the embedded Tansu broker answers only when the wait ends,
which would add up to 1.5 s to every event's trip to the timeline.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

_FETCH_WAIT_MS = {"value": 500}


def configure_fetch_wait(ms: int) -> None:
    _FETCH_WAIT_MS["value"] = ms


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts, which is later.
        consumer._fetch_max_wait_ms = _FETCH_WAIT_MS["value"]
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
