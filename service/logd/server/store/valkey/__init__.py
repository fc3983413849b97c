"""The Valkey/Redis store for several nodes: the store, its queries, its tail reader, and
the replay check across nodes."""
