"""The `logd` command: `main` (the group and `serve`), the client commands, their output."""
