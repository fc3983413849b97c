"""logd: cheap, real-time, secure logging over UDP, read over HTTP."""

__version__ = "0.1.0"
