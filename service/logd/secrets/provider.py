"""Public face of the app-side secret provider: `from logd.secrets.provider import
SecretsManagerProvider` (documented; the code is in `logd.client.secret_provider`)."""

from logd.client.secret_provider import SecretsManagerProvider

__all__ = ["SecretsManagerProvider"]
