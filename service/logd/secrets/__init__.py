"""Key sources (env, file, dev mode; Secrets Manager later) and the reloading KeyManager."""

from logd.secrets.manager import KeyManager
from logd.secrets.sources import DevFileSource, EnvSource, FileSource, KeySource, select_source

__all__ = ["DevFileSource", "EnvSource", "FileSource", "KeyManager", "KeySource", "select_source"]
