"""The HTTP API: routes, /info and /metrics, the idle-connection guard, the auth rate limit."""
