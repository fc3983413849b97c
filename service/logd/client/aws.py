"""The AWS calls shared by the app-side secret provider, the server and `sops push`:
a Secrets Manager client from the standard AWS configuration, and one sentence for a
failed call. boto3 is imported only when a client is made, so importing this module
costs nothing for an app that never asks for Secrets Manager.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from logd.errors import ConfigError, SecretsError, SecretsUnavailable

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


def make_client(secret_id: str) -> SecretsManagerClient:
    """A Secrets Manager client from the standard AWS configuration; with no region
    configured, the region of an ARN secret id."""
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise ConfigError(
            "a Secrets Manager secret id is set but boto3 is not installed; "
            "install it with: pip install 'logd[aws]'"
        ) from None
    session = boto3.session.Session()
    # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what Lambda and the other SDKs
    # read first, so it wins here too.
    region = os.environ.get("AWS_REGION") or session.region_name or _arn_region(secret_id)
    if region is None:
        raise ConfigError(
            "no AWS region is configured for Secrets Manager; set AWS_REGION "
            "(or AWS_DEFAULT_REGION) or use the secret's ARN"
        )
    # Short timeouts and few retries: callers retry with their own backoff.
    config = BotoConfig(
        connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 2}
    )
    return session.client("secretsmanager", region_name=region, config=config)


def _arn_region(secret_id: str) -> str | None:
    parts = secret_id.split(":")
    return parts[3] or None if secret_id.startswith("arn:") and len(parts) > 3 else None


def boto_errors() -> tuple[type[Exception], ...]:
    """What a failed call raises: an AWS error answer, or a transport/credentials error."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


_DENIED = ("AccessDenied", "UnrecognizedClient", "InvalidClientTokenId", "ExpiredToken")


def error_code(err: Exception) -> str | None:
    """The AWS error code of a botocore ClientError, else None (a transport error)."""
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return None
    code = str(response.get("Error", {}).get("Code", "error"))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return "AccessDenied" if status == 403 and code.isdigit() else code


def describe_error(err: Exception, action: str, secret_id: str) -> SecretsError:
    """One sentence for a failed call: the secret id and the error code, never a value."""
    code = error_code(err)
    if code is not None:
        if code == "ResourceNotFoundException":
            return SecretsError(f"Secrets Manager has no secret {secret_id} ({action} failed)")
        if code.startswith(_DENIED):
            return SecretsUnavailable(
                f"Secrets Manager denied {action} on {secret_id} ({code}); "
                "check the instance role's permissions"
            )
        return SecretsUnavailable(f"Secrets Manager {action} on {secret_id} failed ({code})")
    return SecretsUnavailable(
        f"cannot reach Secrets Manager for {secret_id} ({type(err).__name__})"
    )
