"""Key sources (env, file, dev mode; Secrets Manager in `logd.server.secrets.aws`, imported only
when configured), the KeyManager that swaps rings, and the Reloader loop."""

from logd.server.secrets.manager import KeyManager
from logd.server.secrets.reloader import Reloader
from logd.server.secrets.sources import (
    DevFileSource,
    EnvSource,
    FileSource,
    KeySource,
    select_source,
)

__all__ = [
    "DevFileSource",
    "EnvSource",
    "FileSource",
    "KeyManager",
    "KeySource",
    "Reloader",
    "select_source",
]
