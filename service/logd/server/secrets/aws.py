"""SecretsManagerSource: the read and write secrets from AWS Secrets Manager.

Each load describes both secrets (one call each) to learn which version holds
AWSCURRENT, AWSPENDING and AWSPREVIOUS, then fetches only the versions it has
not seen before, always naming the stage with `VersionStage` so a label that
moved in between is an error rather than a silent wrong value. Values of a
version never change, so they are cached by version id until unlabelled.

Region, endpoint (`AWS_ENDPOINT_URL`) and credentials come from the standard
AWS configuration. boto3 is imported when the source is built, so the server
runs without it unless a secret id is configured. Calls run in a thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from logd.client.aws import boto_errors, describe_error, error_code, make_client
from logd.errors import SecretsError, SecretsUnavailable
from logd.server.keys import MIN_SECRET_BYTES, KeyRing, Role, Stage

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

_ID_SETTING = {Role.READ: "LOGD_READ_SECRET_ID", Role.WRITE: "LOGD_WRITE_SECRET_ID"}


class _StageMoved(SecretsUnavailable):
    """The stage named in GetSecretValue no longer labels the version DescribeSecret gave."""


class SecretsManagerSource:
    """Both roles' secrets, by stage, from two Secrets Manager secrets."""

    name = "secretsmanager"

    def __init__(
        self,
        *,
        read_secret_id: str,
        write_secret_id: str,
        client: SecretsManagerClient | None = None,
    ) -> None:
        self.secret_ids = {Role.READ: read_secret_id, Role.WRITE: write_secret_id}
        self._client = client if client is not None else make_client(read_secret_id)
        self._values: dict[tuple[Role, str], str] = {}  # (role, version id) -> value
        self._lock = threading.Lock()  # a SIGHUP reload may overlap a periodic one

    @property
    def where(self) -> str:
        return f"read={self.secret_ids[Role.READ]} write={self.secret_ids[Role.WRITE]}"

    async def load(self) -> KeyRing:
        return await asyncio.to_thread(self._load)

    def _load(self) -> KeyRing:
        with self._lock:
            try:
                return self._load_once()
            except _StageMoved:
                return self._load_once()  # a rotation step ran between two calls: look again

    def _load_once(self) -> KeyRing:
        secrets: dict[tuple[Role, Stage], str] = {}
        wanted: set[tuple[Role, str]] = set()
        for role, secret_id in self.secret_ids.items():
            for stage, version_id in self._staged_versions(role, secret_id).items():
                value = self._value(role, secret_id, version_id, stage)
                if value is not None:
                    secrets[role, stage] = value
                    wanted.add((role, version_id))
        for stale in self._values.keys() - wanted:
            del self._values[stale]
        return KeyRing.from_secrets(secrets, min_bytes=MIN_SECRET_BYTES)

    def _staged_versions(self, role: Role, secret_id: str) -> dict[Stage, str]:
        """Stage -> version id; a version that holds several stages counts once, under
        the first of CURRENT, PENDING, PREVIOUS."""
        try:
            metadata = self._client.describe_secret(SecretId=secret_id)
        except boto_errors() as err:
            raise describe_error(err, "DescribeSecret", secret_id) from None
        by_stage: dict[Stage, str] = {}
        taken: set[str] = set()
        versions = metadata.get("VersionIdsToStages", {})
        for stage in Stage:
            for version_id, labels in versions.items():
                if stage.value in labels and version_id not in taken:
                    by_stage[stage] = version_id
                    taken.add(version_id)
        if Stage.CURRENT not in by_stage:
            raise SecretsError(
                f"Secrets Manager secret {secret_id} has no AWSCURRENT version; "
                f"put a value into it or fix {_ID_SETTING[role]}"
            )
        return by_stage

    def _value(self, role: Role, secret_id: str, version_id: str, stage: Stage) -> str | None:
        """The version's value; None for a non-current version that has none yet (RotateSecret
        labels the new version AWSPENDING before the Lambda's createSecret puts a value)."""
        cached = self._values.get((role, version_id))
        if cached is not None:
            return cached
        try:
            answer = self._client.get_secret_value(
                SecretId=secret_id, VersionId=version_id, VersionStage=stage.value
            )
        except boto_errors() as err:
            code = error_code(err)
            if code == "ResourceNotFoundException" and stage is not Stage.CURRENT:
                return None
            failure = describe_error(err, "GetSecretValue", secret_id)
            if code == "InvalidRequestException":
                raise _StageMoved(str(failure)) from None
            raise failure from None
        value = answer.get("SecretString")
        if not value:
            raise SecretsError(
                f"Secrets Manager secret {secret_id} ({stage}) holds no text; "
                "store the secret as a plain SecretString"
            )
        self._values[role, version_id] = value
        return value
