"""logd: cheap, real-time, secure logging over UDP, read over HTTP.

The package is laid out by who runs it:

    logd.logger        public: Logger, LogdHandler (an app's side)
    logd.client        what apps and the CLI run: stdlib + protobuf only
    logd.cli           the `logd` command (click)
    logd.server        `logd serve`: ingest, HTTP, store, secrets (the server extra)
    wire, events, errors, devsecrets, _pb   shared by both sides

Dependencies point one way: client never imports server (a test proves it).
"""

__version__ = "0.1.0"
