"""Yjs editors on collab: the y-websocket protocol, awareness, and the bridge to the OT text.

The modules here are pure (bytes in, bytes out; no sockets, no database) except where a name
says otherwise. The contract they implement is docs/yjs.md.
"""
