"""deploy-check: start a systemd unit's service the way its [Service] section says, without
systemd (the arm64 root has none as PID 1). Runs inside the root, under its python3.11.

Honoured: ExecStart, User, Group, Environment, EnvironmentFile, StateDirectory (+Mode),
UMask. Not applied: the sandbox (Protect*, SystemCallFilter, ...) and resource limits;
`systemd-analyze verify` checks the unit outside the root instead. The only environment
added is /etc/deploy-check/aws.env (the endpoint and stand-in credentials of the instance
role). The process's id goes to /run/deploy-check/<unit>.pid, its output to
/var/log/deploy-check/<unit>.log.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import subprocess
import sys
from pathlib import Path


def service_section(text: str) -> list[tuple[str, str]]:
    """(key, value) of every directive in [Service], in order (keys may repeat)."""
    items, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            items.append((key.strip(), value.strip()))
    return items


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, value = line.split("=", 1)
            values[name] = value
    return values


def main(unit_path: str) -> int:
    unit = Path(unit_path)
    directives = service_section(unit.read_text())
    one = dict(directives)
    user, group = one.get("User", "root"), one.get("Group", one.get("User", "root"))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env["HOME"] = pwd.getpwnam(user).pw_dir
    for key, value in directives:
        if key == "Environment":
            name, val = value.split("=", 1)
            env[name] = val
        elif key == "EnvironmentFile":
            env |= env_file(Path(value.lstrip("-")))
    env |= env_file(Path("/etc/deploy-check/aws.env"))
    if "StateDirectory" in one:
        state = Path("/var/lib") / one["StateDirectory"]
        state.mkdir(parents=True, exist_ok=True)
        os.chown(state, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
        state.chmod(int(one.get("StateDirectoryMode", "0755"), 8))
    run, logs = Path("/run/deploy-check"), Path("/var/log/deploy-check")
    run.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{unit.stem}.log").open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - the unit's own command line
            shlex.split(one["ExecStart"]),
            env=env,
            user=user,
            group=group,
            extra_groups=[],
            umask=int(one.get("UMask", "0022"), 8),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (run / f"{unit.stem}.pid").write_text(f"{proc.pid}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
