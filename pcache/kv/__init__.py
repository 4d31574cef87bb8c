"""KV-cache events: the engines' own account of which prefix blocks they hold.

``events`` is vLLM's wire format (ZMQ frames, msgpack ``KVEventBatch``), ``index`` the precise
per-replica index built from them, ``subscriber`` the per-replica ingestion thread, ``tokens`` the
request in the engine's own token ids.
"""
