"""The exceptions logd raises on purpose, each carrying one sentence for a person.

    LogdError                 base: str(err) is the sentence to show, never a secret
    ├── ConfigError           a setting is missing or has a bad value (exit 2)
    ├── SecretsError          no usable key could be loaded from a source
    │   └── SecretsUnavailable  the source could not be reached (retry later)
    └── ClientError           a `logd` client command failed (bad answer, unreachable host)

Expected rejections of hostile input (bad frames, bad HTTP parameters) are not
exceptions: they are counted and answered where they happen.
"""


class LogdError(Exception):
    """Base class: the message is one sentence meant for a person."""


class ConfigError(LogdError):
    """A setting is missing or has a bad value."""


class SecretsError(LogdError):
    """No usable key could be loaded from a secrets source."""


class SecretsUnavailable(SecretsError):
    """The secrets source could not be reached; the caller keeps its last good keys."""


class ClientError(LogdError):
    """A client command could not do what was asked."""
