"""A campaign sender as its own process, for the restart test: ``python mkc_sender_proc.py
<database url> <smtp url> <messages per second>``. It sends until nothing is due or in flight."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from crm_marketing.delivery.sender import Deliverer
from crm_marketing.delivery.settings import DeliverySettings
from crm_runtime import db
from crm_runtime.eventstore import EventStore
from crm_runtime.settings import Settings

LEASE_SECONDS = 1.0


async def main(database_url: str, smtp_url: str, rate: float) -> None:
    pool = await db.create_pool(database_url, max_size=4)
    try:
        settings = Settings(
            service_name="marketing",
            crm_env="test",
            service_database_url=database_url,
            smtp_url=smtp_url,
            mail_from="news@shop.example",
        )
        cfg = DeliverySettings(
            public_base_url="http://marketing.test",
            send_rate=rate,
            frequency_cap=0,
            quiet_hours_start=None,
            quiet_hours_end=None,
            lease_seconds=LEASE_SECONDS,
            batch_size=20,
        )
        sender = Deliverer(pool, EventStore(pool, "/crm/marketing"), settings, cfg)
        while True:
            if await sender.run_once(datetime.now(UTC)):
                continue
            left = await pool.fetchval(
                "SELECT count(*) FROM messages WHERE status IN ('queued', 'sending')"
            )
            if not left:
                break
            await asyncio.sleep(0.2)  # in flight under another (dead) sender's lease
        await sender.close()
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
