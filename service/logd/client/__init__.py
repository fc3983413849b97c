"""The app-side client: sender, encoder, env lookup, ping, read client, secret provider.

Stdlib and protobuf only (boto3 on demand): apps import this, never the server."""
