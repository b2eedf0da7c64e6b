"""The log as a stream: Server-Sent Events of one document or of every document, and
webhooks, all following the store by cursor (seq, or the global position) rather than
queueing events. ``sse``: the streams; ``webhooks``: delivery; ``wakeup``: what tells a
waiting follower that the log grew; ``extension``: the Changefeed extension that holds
them; ``events``: the JSON of an event on the feed. Documented in docs/changefeed.md."""

from __future__ import annotations

from .extension import Changefeed
from .webhooks import Webhook, sign, verify

__all__ = ["Changefeed", "Webhook", "sign", "verify"]
