"""`logd serve`: app wiring and config; ingest, HTTP, store and secrets below it."""
