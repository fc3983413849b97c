"""SOPS with the real `sops` binary: an age key made here, a file encrypted with it, its
values pushed into Secrets Manager (moto) and read back; and the committed files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyrage
import pytest
import yaml
from logd.errors import SecretsError
from logd.server.secrets.sops import decrypt, push, sops_binary
from moto import mock_aws
from moto_support import ROOT, MotoServer, stages

READ = "lab-read-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"
WRITE = "lab-write-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
PLAINTEXT = f"""# lab secrets
secretsmanager:
  logd/lab/read: {READ}
  logd/lab/write: {WRITE}
other_tool:
  token: not-for-secrets-manager
"""


def age_key(directory: Path) -> str:
    """A new age identity in `directory`/keys.txt (0600); returns its public key."""
    identity = pyrage.x25519.Identity.generate()
    path = directory / "keys.txt"
    path.touch(mode=0o600)
    path.write_text(f"{identity}\n")
    return str(identity.to_public())


def encrypt(directory: Path, recipient: str, plaintext: str = PLAINTEXT) -> Path:
    """secrets/lab.enc.yaml under `directory`, encrypted by `sops` per a .sops.yaml there;
    the plaintext goes in through a pipe."""
    (directory / ".sops.yaml").write_text(
        f"creation_rules:\n  - path_regex: secrets/.*\\.enc\\.yaml$\n    age: {recipient}\n"
    )
    target = directory / "secrets" / "lab.enc.yaml"
    target.parent.mkdir(exist_ok=True)
    subprocess.run(
        [
            sops_binary(),
            "--config",
            str(directory / ".sops.yaml"),
            "encrypt",
            "--filename-override",
            str(target),
            "--output",
            str(target),
        ],
        input=plaintext.encode(),
        check=True,
        capture_output=True,
        timeout=60,
        cwd=directory,
    )
    return target


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "keys.txt"))
    return encrypt(tmp_path, age_key(tmp_path))


@pytest.fixture
def sm() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_the_encrypted_file_holds_no_plaintext(lab: Path) -> None:
    text = lab.read_text()
    assert READ not in text
    assert WRITE not in text
    document = yaml.safe_load(text)
    assert all(v.startswith("ENC[AES256_GCM,") for v in document["secretsmanager"].values())


def test_push_then_read_back(lab: Path, sm: Any) -> None:
    values = decrypt(lab)
    assert values == {"logd/lab/read": READ, "logd/lab/write": WRITE}
    assert push(values, sm) == [("logd/lab/read", "created"), ("logd/lab/write", "created")]
    assert (
        sm.get_secret_value(SecretId="logd/lab/read", VersionStage="AWSCURRENT")["SecretString"]
        == READ
    )
    assert (
        sm.get_secret_value(SecretId="logd/lab/write", VersionStage="AWSCURRENT")["SecretString"]
        == WRITE
    )


def test_push_again_changes_nothing_and_a_new_value_moves_current(
    lab: Path, sm: Any, tmp_path: Path
) -> None:
    push(decrypt(lab), sm)
    before = stages(sm, "logd/lab/write")
    assert push(decrypt(lab), sm) == [
        ("logd/lab/read", "unchanged"),
        ("logd/lab/write", "unchanged"),
    ]
    assert stages(sm, "logd/lab/write") == before
    changed = encrypt(tmp_path, age_key(tmp_path), PLAINTEXT.replace(WRITE, WRITE + "2"))
    assert push(decrypt(changed), sm)[1] == ("logd/lab/write", "updated")
    assert stages(sm, "logd/lab/write")["AWSPREVIOUS"] == before["AWSCURRENT"]


def test_decrypting_without_the_key_is_one_sentence(
    lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    age_key(other)
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(other / "keys.txt"))
    with pytest.raises(SecretsError, match=r"^sops could not decrypt .*\?$") as err:
        decrypt(lab)
    assert "\n" not in str(err.value)


def test_a_file_without_the_section_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "keys.txt"))
    path = encrypt(tmp_path, age_key(tmp_path), "other_tool:\n  token: x\n")
    with pytest.raises(SecretsError, match="no `secretsmanager:` mapping"):
        decrypt(path)


def test_the_push_command_against_moto_server(lab: Path, tmp_path: Path) -> None:
    """What `make secrets-push` runs, as its own process, into a real HTTP endpoint."""
    server = MotoServer(tmp_path / "moto.log")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "logd.server.secrets.sops", "push", str(lab)],
            env={**os.environ, "AWS_ENDPOINT_URL": server.url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "secrets-push: logd/lab/read created",
            "secrets-push: logd/lab/write created",
        ]
        assert READ not in result.stdout + result.stderr
        client = server.client()
        assert (
            client.get_secret_value(SecretId="logd/lab/read", VersionStage="AWSCURRENT")[
                "SecretString"
            ]
            == READ
        )
    finally:
        server.stop()


def test_make_secrets_push_runs_that_command() -> None:
    dry = subprocess.run(
        ["make", "-n", "secrets-push", "ENV=dev"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ".venv/bin/python -m logd.server.secrets.sops push secrets/dev.enc.yaml" in dry.stdout
    edit = subprocess.run(
        ["make", "-n", "secrets-edit", "ENV=dev"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ".venv/bin/sops edit secrets/dev.enc.yaml" in edit.stdout
    bad = subprocess.run(
        ["make", "secrets-push", "ENV=../x"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert "usage: make secrets-push ENV=dev" in bad.stdout


# --- the committed files --------------------------------------------------------------------


def _rules() -> list[dict[str, str]]:
    return list(yaml.safe_load((ROOT / ".sops.yaml").read_text())["creation_rules"])


def _rule_for(path: str) -> dict[str, str]:
    return next(rule for rule in _rules() if re.search(rule["path_regex"], path))


def test_dev_files_use_the_age_recipient_and_others_kms() -> None:
    assert set(_rule_for("secrets/dev.enc.yaml")) == {"path_regex", "age"}
    assert _rule_for("secrets/prod.enc.yaml")["kms"].startswith("arn:aws:kms:")
    assert _rule_for("/home/me/logd/secrets/staging.enc.yaml")["kms"].startswith("arn:aws:kms:")


def test_the_committed_dev_file_is_sops_encrypted_for_the_dev_recipient() -> None:
    document = yaml.safe_load((ROOT / "secrets" / "dev.enc.yaml").read_text())
    recipients = [entry["recipient"] for entry in document["sops"]["age"]]
    assert recipients == _rule_for("secrets/dev.enc.yaml")["age"].split(",")
    assert set(document["secretsmanager"]) == {"logd/dev/read", "logd/dev/write"}
    assert all(v.startswith("ENC[AES256_GCM,") for v in document["secretsmanager"].values())
    assert not document["sops"].get("kms")
