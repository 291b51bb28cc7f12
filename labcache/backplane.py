"""Cross-instance L1 invalidation over Redis pub/sub (fixes mistake 5: L1 invalidation was local).

Every invalidation an instance makes is published on `<namespace>__invalidate__`; every other
instance on the namespace evicts the same keys from its own L1. Each message carries the sender's
id and a sequence number: a gap means messages were lost, and the only safe answer is to flush L1.
A dropped subscription is answered the same way, since what was missed cannot be known.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from labcache.listener import PubSubListener

logger = logging.getLogger(__name__)


class Backplane(PubSubListener):
    """Publishes this instance's invalidations and applies the others' through callbacks."""

    transport = "pub/sub"  # as the reasons for a flush name it

    def __init__(
        self,
        redis: aioredis.Redis,
        channel: str,
        *,
        on_keys: Callable[[list[str]], None],
        on_pattern: Callable[[str], None],
        on_reset: Callable[[str], None],
        instance_id: str | None = None,
    ) -> None:
        super().__init__(redis, channel, f"backplane:{channel}")
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.on_keys, self.on_pattern, self.on_reset = on_keys, on_pattern, on_reset
        self.sequence = 0
        self.resets = 0
        self._last_seen: dict[str, int] = {}
        self._deaf = False

    async def publish(self, op: str, arg: list[str] | str) -> None:
        """Tell the other instances to evict `arg` (a list of keys, or a glob for op 'pattern')."""
        self.sequence += 1
        message = json.dumps({"src": self.instance_id, "seq": self.sequence, "op": op, "arg": arg})
        await self.redis.publish(self.channel, message)

    async def _subscribed(self, again: bool) -> None:
        # Re-subscribed (by redis-py or by us): flush what L1 gained while deaf.
        if again or self._deaf:
            self._deaf = False
            self._last_seen.clear()  # the flush covers the gap; no second flush
            self._reset(f"{self.transport} reconnected")

    def _lost(self, exc: BaseException) -> None:
        self._deaf = True  # messages may have been missed until the next subscription
        self._reset(f"{self.transport} connection lost: {type(exc).__name__}")

    async def _handle(self, raw: bytes | str) -> None:
        try:
            msg: dict[str, Any] = json.loads(raw)
            src, seq, op, arg = msg["src"], int(msg["seq"]), msg["op"], msg["arg"]
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed backplane message on %s: %r", self.channel, raw)
            return
        if src == self.instance_id:
            return
        last = self._last_seen.get(src)
        self._last_seen[src] = seq
        if last is not None and seq != last + 1:
            self._reset(f"gap in messages from {src}: {last} -> {seq}")
        elif op == "keys":
            self.on_keys(list(arg))
        elif op == "pattern":
            self.on_pattern(str(arg))
        else:
            self._reset(f"{op} from {src}")
        await self._applied()

    def _reset(self, reason: str) -> None:
        self.resets += 1
        logger.info("flushing L1 on %s: %s", self.channel, reason)
        self.on_reset(reason)
