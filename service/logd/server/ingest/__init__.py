"""UDP ingest: the drain loop (drain.py), the engines that check frames (engine.py picks C
or Python; accept.py and replay.py are the specification), counters, and the socket."""
