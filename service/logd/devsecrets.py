"""Secrets files: the `NAME=value` format shared by `--secrets-file` and dev mode.

Standard library only, because the client (`logd.logger`) reads the dev file too.
A file looks like a shell env file, so `. FILE` puts the secrets into a shell:

    LOGD_READ_SECRET=...
    LOGD_WRITE_SECRET=...
    LOGD_WRITE_SECRET_PREVIOUS=...    # optional: _PENDING and _PREVIOUS stages

A value is the rest of its line, byte for byte (PROTOCOL.md: no trimming
beyond the newline).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

READ_NAME = "LOGD_READ_SECRET"
WRITE_NAME = "LOGD_WRITE_SECRET"
STAGE_SUFFIXES = ("", "_PENDING", "_PREVIOUS")
KNOWN_NAMES = frozenset(
    f"{base}{sfx}" for base in (READ_NAME, WRITE_NAME) for sfx in STAGE_SUFFIXES
)


class SecretsFileError(ValueError):
    """The file is missing, unreadable or malformed; the message never holds a value."""


def dev_secrets_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The per-user dev-mode file: $XDG_CONFIG_HOME/logd/dev-secrets.env
    (by default ~/.config/logd/dev-secrets.env)."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "logd" / "dev-secrets.env"


def read_secrets_file(path: Path) -> dict[str, str]:
    """NAME -> value for every secret in the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretsFileError(f"secrets file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SecretsFileError(
            f"secrets file {path} cannot be read ({type(err).__name__})"
        ) from None
    found: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or name not in KNOWN_NAMES:
            # The message reaches the log and the unauthenticated /info, and the line may be
            # a secret pasted on its own (or one holding an "="): so it names only what
            # is surely a mistyped name (LOGD_...=), else the line by its number alone.
            typo = f" (got {name!r})" if sep and _looks_like_a_name(name) else ""
            raise SecretsFileError(
                f"secrets file {path} line {number}: expected NAME=value with NAME one of "
                f"{', '.join(sorted(KNOWN_NAMES))}{typo}"
            )
        if name in found:
            raise SecretsFileError(f"secrets file {path} sets {name} twice")
        found[name] = value
    return found


def _looks_like_a_name(text: str) -> bool:
    return text.startswith("LOGD_") and text.isascii() and text.isidentifier() and text.isupper()


def ensure_dev_secrets(path: Path) -> bool:
    """Create the dev-mode file with fresh random secrets if it does not exist.

    256 bits each, URL-safe characters (safe in a shell and an HTTP header). The
    directory is 0700 and the file 0600, created exclusively, so no other user can
    read it or plant one first. Returns True when the file was created.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    content = (
        "# logd dev-mode secrets, made by `logd serve`; `. THIS_FILE` puts them in a shell.\n"
        f"{READ_NAME}={secrets.token_urlsafe(32)}\n"
        f"{WRITE_NAME}={secrets.token_urlsafe(32)}\n"
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(content)
    return True
