"""Pub/sub between server processes: an interface, a local implementation and Redis.

==============  ===============================================================================
``base``        the ``PubSub`` interface
``messages``    the typed messages processes exchange, and their JSON form
``local``       ``LocalPubSub``: in-process (one node per process; several in tests)
``redis``       ``RedisPubSub``, imported only when ``COLLAB_REDIS_URL`` is set
``resp``        its lean Redis connections: RESP out, ``hiredis`` replies in (no redis-py)
==============  ===============================================================================
"""

from __future__ import annotations

from collab.pubsub.base import OnMessage, OnReconnect, PubSub
from collab.pubsub.local import LocalHub, LocalPubSub

__all__ = ["LocalHub", "LocalPubSub", "OnMessage", "OnReconnect", "PubSub"]
