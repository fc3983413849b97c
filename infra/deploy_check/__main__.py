"""`make deploy-check`: the host's first boot, proven on arm64 on this machine.

1. Synthesize the default stack with the real wheelhouse (build/wheelhouse).
2. Start `moto_server` on 127.0.0.1 and create the stack's two secrets in it.
3. Render the instance's real user data from the template (its references resolved with
   the secrets' ARNs, the region, the stack's name) and run it, as root, in a fresh copy of
   a Debian arm64 root under qemu, with dnf, aws, systemctl and sysctl stood in for and
   every call recorded (stubs/). `systemctl enable --now` starts the unit's ExecStart as
   the unit says, with the moto endpoint as the only addition.
4. Check: the recorded calls and the readiness signal; the unit passes `systemd-analyze
   verify`; /healthz; /info says the C accept path runs; a signed write is read back; the
   stack's CurlCommand output works (address swapped, the real AWS CLI against moto); the
   deploy-time rotation test and a full rotation of both secrets pass through the real
   handler, PINGing logd.

Fails (exit 1), never skips, when a step cannot run; each failure is one sentence.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from infra.deploy_check.cfn import resolve
from infra.deploy_check.root import CheckError, arm64_emulation, fresh_root, root_image

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's account
STACK = "Logd"
INSTANCE_ID = "i-0dec0ded0dec0ded0"
UDP_PORT, HTTP_PORT = 6102, 6101
# The AWS CLI the CurlCommand output calls (version 1 is on PyPI; the host has version 2).
AWSCLI = "awscli==1.46.3"
BOOT_TIMEOUT_S = 20 * 60
WHEELHOUSE_ZIP = "/opt/logd/wheelhouse.zip"
# What the host asks dnf for (infra/components/files/user_data.sh).
DNF_PACKAGES = ["python3.11", "python3.11-pip", "python3.11-devel", "gcc", "openssl-devel"]
GAPS = (
    "Not proven here: Debian bookworm is not Amazon Linux 2023 (glibc 2.36 and gcc 12 "
    "against 2.34 and 11; the real dnf packages are not installed); systemd is not PID 1 "
    "(the unit's sandbox and limits are verified with systemd-analyze, not applied); "
    "S3, CloudFormation and IMDS are stand-ins; the endpoints, security groups and IAM "
    "are checked on the template only."
)


@dataclass
class Report:
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def step(self, name: str) -> _Step:
        return _Step(self, name)

    def ok(self, name: str, detail: str) -> None:
        self.lines.append(f"PASS  {name}: {detail}")
        print(f"deploy-check: PASS {name}: {detail}", flush=True)

    def fail(self, name: str, detail: str) -> None:
        self.lines.append(f"FAIL  {name}: {detail}")
        self.failed.append(name)
        print(f"deploy-check: FAIL {name}: {detail}", flush=True)


class _Step:
    def __init__(self, report: Report, name: str) -> None:
        self.report, self.name = report, name

    def __enter__(self) -> _Step:
        self.t0 = time.monotonic()
        print(f"deploy-check: {self.name} ...", flush=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: Any
    ) -> None:
        took = time.monotonic() - self.t0
        if err is None:
            self.report.lines.append(f"      {self.name} ({took:.0f} s)")


# --- the stack --------------------------------------------------------------------------


def synthesize(outdir: Path, wheelhouse: Path) -> tuple[dict[str, Any], Path, str]:
    """The default stack's template, the wheelhouse asset's directory in the assembly and
    where the CDK CLI would upload it (an S3 URL with `${AWS::...}` in it)."""
    from infra.app import build_app

    context = json.loads((REPO / "infra" / "cdk.json").read_text())["context"]
    if outdir.exists():
        shutil.rmtree(outdir)
    app, stack = build_app(
        context=context | {"aws:cdk:disable-stack-trace": True},
        outdir=str(outdir),
        wheelhouse=wheelhouse,
        builtin_validation=False,
    )
    app.synth()
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    assets = json.loads((outdir / f"{stack.stack_name}.assets.json").read_text())["files"]
    (wheelhouse_asset,) = [
        a
        for a in assets.values()
        if a["source"]["packaging"] == "zip" and _is_wheelhouse(outdir, a)
    ]
    (destination,) = wheelhouse_asset["destinations"].values()
    url = f"s3://{destination['bucketName']}/{destination['objectKey']}"
    return template, outdir / wheelhouse_asset["source"]["path"], url


def _is_wheelhouse(outdir: Path, asset: dict[str, Any]) -> bool:
    return any((outdir / asset["source"]["path"]).glob("logd-*.whl"))


def zip_asset(directory: Path, target: Path) -> None:
    """The asset as the CDK CLI uploads it: the directory's files at the zip's top level."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory).as_posix())


def only(template: dict[str, Any], kind: str, description: str = "") -> tuple[str, dict[str, Any]]:
    found = [
        (rid, r)
        for rid, r in template["Resources"].items()
        if r["Type"] == kind
        and r.get("Properties", {}).get("Description", "").startswith(description)
    ]
    if len(found) != 1:
        raise CheckError(f"the template has {len(found)} {kind} resources where one was expected")
    return found[0]


# --- moto_server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: _answers(url + "/moto-api/"), 30, "moto_server did not start")
            body = json.dumps({"lambda": {"use_docker": False}}).encode()
            request = urllib.request.Request(url + "/moto-api/config", data=body, method="POST")  # noqa: S310
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2):  # noqa: S310
            return True
    except (urllib.error.URLError, OSError):
        return False


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise CheckError(message)
        time.sleep(0.5)


def aws_client(service: str, endpoint: str) -> Any:
    import boto3

    make: Any = boto3.client  # any service by name (its stubs overload on name literals)
    return make(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's stand-in credentials
    )


def create_secrets(endpoint: str, template: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each of the template's secrets in moto, named and generated as CloudFormation would:
    logical id -> (ARN, value)."""
    client = aws_client("secretsmanager", endpoint)
    made = {}
    for rid, resource in template["Resources"].items():
        if resource["Type"] != "AWS::SecretsManager::Secret":
            continue
        generator = resource["Properties"]["GenerateSecretString"]
        value = client.get_random_password(
            PasswordLength=generator["PasswordLength"],
            ExcludePunctuation=generator["ExcludePunctuation"],
            IncludeSpace=generator["IncludeSpace"],
        )["RandomPassword"]
        name = f"{rid}-{uuid.uuid4().hex[:12]}"
        arn = client.create_secret(Name=name, SecretString=value)["ARN"]
        made[rid] = (str(arn), str(value))
    return made


# --- the boot ---------------------------------------------------------------------------


def install_stand_ins(root: Path, wheelhouse_zip: Path, wheelhouse_url: str, endpoint: str) -> None:
    local = root / "usr/local"
    for name in ("dnf", "aws", "systemctl", "sysctl"):
        shutil.copy2(HERE / "stubs" / name, local / "bin" / name)
    lib = local / "lib/deploy-check"
    lib.mkdir(parents=True, exist_ok=True)
    for name in ("record.sh", "start_unit.py"):
        shutil.copy2(HERE / "stubs" / name, lib / name)
    etc = root / "etc/deploy-check"
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheelhouse_zip, etc / "wheelhouse.zip")
    (etc / "wheelhouse-url").write_text(wheelhouse_url + "\n")
    # The instance role's stand-in: moto's endpoint and credentials; the region is the unit's.
    (etc / "aws.env").write_text(
        f"AWS_ENDPOINT_URL={endpoint}\nAWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n"
    )
    # What cloud-init leaves on an instance before it runs the user data.
    data = root / "var/lib/cloud/data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "instance-id").write_text(INSTANCE_ID + "\n")
    hosts = root / "etc/hosts"
    if "localhost" not in (hosts.read_text() if hosts.exists() else ""):
        hosts.write_text("127.0.0.1 localhost\n::1 localhost\n")


def boot(root: Path, script: str, log: Path) -> int:
    """Run the user data as cloud-init does (as root, once); its output goes to `log`."""
    scripts = root / "var/lib/cloud/instance/scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "part-001").write_text(script)
    (scripts / "part-001").chmod(0o700)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    env["LANG"] = "C.UTF-8"
    with log.open("wb") as out:
        try:
            return subprocess.run(  # noqa: S603
                ["chroot", str(root), "/var/lib/cloud/instance/scripts/part-001"],  # noqa: S607
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BOOT_TIMEOUT_S,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            return -1


def calls(root: Path) -> list[list[str]]:
    path = root / "var/log/deploy-check/calls"
    return [shlex.split(line) for line in path.read_text().splitlines()] if path.exists() else []


def stop_unit(root: Path) -> None:
    pid_file = root / "run/deploy-check/logd.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


def ports_free() -> None:
    for kind, port in ((socket.SOCK_DGRAM, UDP_PORT), (socket.SOCK_STREAM, HTTP_PORT)):
        with socket.socket(socket.AF_INET, kind) as sock:
            # As logd binds: connections of an earlier run in TIME_WAIT do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                raise CheckError(
                    f"port {port} is taken on this machine, and the host's unit binds it: "
                    "stop whatever listens there (a `make run`?) and run the check again"
                ) from None


# --- the checks -------------------------------------------------------------------------


def rotation_handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rotation_handler", REPO / "rotation_lambda/handler.py"
    )
    if spec is None or spec.loader is None:
        raise CheckError("rotation_lambda/handler.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def http_get(path: str, secret: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": secret} if secret else {}
    request = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def send_event(handler: ModuleType, write_secret: str, text: str) -> None:
    schema: Any = importlib.import_module("logd._pb.logd_pb2")  # the wire schema, generated
    msg = schema.Msg(env="deploy-check", svc="first-boot", txt=text)
    payload = schema.Cmd(msg=msg).SerializeToString()
    frame = handler.sign_frame(write_secret.encode(), payload, time.time_ns())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(frame, ("127.0.0.1", UDP_PORT))


def read_back(read_secret: str, text: str) -> bool:
    status, body = http_get("/?limit=100&env=deploy-check", read_secret)
    return status == 200 and any(e.get("txt") == text for e in json.loads(body))


def awscli(work: Path) -> Path:
    """A venv with the real AWS CLI (from PyPI, pinned), for the CurlCommand output."""
    venv = work / "awscli"
    marker = venv / f".{AWSCLI}"
    if not marker.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
        quiet = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
        quiet["PIP_CONFIG_FILE"] = os.devnull  # PyPI only: no local wheel folders to warn about
        subprocess.run(  # noqa: S603
            [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", AWSCLI],
            check=True,
            env=quiet,
        )
        marker.touch()
    return venv / "bin"


def rotate(
    handler: ModuleType, endpoint: str, function_arn: str, arn: str, *, immediately: bool
) -> str:
    """Secrets Manager's part of a rotation, then the handler's steps: with `immediately`
    false, the deploy-time configuration test (testSecret on a copy of the current value,
    whose AWSPENDING label Secrets Manager then removes); else the four steps."""
    client = aws_client("secretsmanager", endpoint)
    answer = client.rotate_secret(
        SecretId=arn,
        RotationLambdaARN=function_arn,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=immediately,
    )
    stages = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    pending = next(v for v, labels in stages.items() if "AWSPENDING" in labels)
    steps = (
        ("createSecret", "setSecret", "testSecret", "finishSecret")
        if immediately
        else ("testSecret",)
    )
    if immediately and pending != answer["VersionId"]:
        raise CheckError("moto did not label the rotation's new version AWSPENDING")
    for step in steps:
        handler.handler({"SecretId": arn, "ClientRequestToken": pending, "Step": step}, None)
    if not immediately:
        client.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSPENDING", RemoveFromVersionId=pending
        )
    return str(client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])


def rotation_function(endpoint: str) -> str:
    """A function in moto for RotateSecret to name (moto runs no code: the check calls the
    real handler itself, as the Lambda runtime would)."""
    role = aws_client("iam", endpoint).create_role(
        RoleName=f"rotation-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument="{}"
    )
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.write(REPO / "rotation_lambda/handler.py", "handler.py")
    function = aws_client("lambda", endpoint).create_function(
        FunctionName=f"logd-rotation-{uuid.uuid4().hex[:8]}",
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
    )
    return str(function["FunctionArn"])


def unit_verifies(root: Path, work: Path) -> str:
    """`systemd-analyze verify` of the unit the boot wrote, against this machine's units."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise CheckError("systemd-analyze is not installed (Debian package systemd)")
    unit_root = work / "unit-root"
    shutil.rmtree(unit_root, ignore_errors=True)
    shutil.copytree("/usr/lib/systemd/system", unit_root / "usr/lib/systemd/system", symlinks=True)
    (unit_root / "etc/systemd/system").mkdir(parents=True)
    shutil.copyfile(
        root / "etc/systemd/system/logd.service", unit_root / "etc/systemd/system/logd.service"
    )
    logd = unit_root / "opt/logd/venv/bin/logd"
    logd.parent.mkdir(parents=True)
    shutil.copy2(root / "opt/logd/venv/bin/logd", logd)
    result = subprocess.run(  # noqa: S603
        [analyze, "verify", f"--root={unit_root}", "logd.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or output:
        raise CheckError(
            f"systemd-analyze verify: {output.splitlines()[-1] if output else result.returncode}"
        )
    return "no warning"


def run(work: Path, cache: Path, wheelhouse: Path) -> Report:
    report = Report()
    if os.geteuid() != 0:
        raise CheckError(
            "make deploy-check needs root: it registers qemu with binfmt_misc and uses chroot"
        )
    if not any(wheelhouse.glob("logd-*.tar.gz")):
        raise CheckError(f"{wheelhouse} has no logd sdist: run `make wheel` first")
    ports_free()
    work.mkdir(parents=True, exist_ok=True)
    with report.step("synthesize the stack"):
        template, asset_dir, asset_url = synthesize(work / "cdk.out", wheelhouse)
        instance_id, instance = only(template, "AWS::EC2::Instance")
        read_id, _ = only(template, "AWS::SecretsManager::Secret", "logd read")
        write_id, _ = only(template, "AWS::SecretsManager::Secret", "logd write")
        zip_asset(asset_dir, work / "wheelhouse.zip")
    with arm64_emulation() as emulation, contextlib.ExitStack() as stack:
        report.lines.append(
            f"      emulation: {', '.join(emulation) or 'qemu-aarch64 already registered'}"
        )
        with report.step("arm64 root"):
            image, origin = root_image(work, cache)
        report.lines.append(f"      root image from {origin}")
        endpoint = stack.enter_context(moto_server(work / "moto.log"))
        made = create_secrets(endpoint, template)
        (read_arn, read_value), (write_arn, write_value) = made[read_id], made[write_id]
        values = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK,
            read_id: read_arn,
            write_id: write_arn,
            f"{instance_id}.PrivateIp": "127.0.0.1",  # the address swapped: the host is here
        }
        script = resolve(instance["Properties"]["UserData"], values)
        digest = hashlib.sha256(script.encode()).hexdigest()[:12]
        # Where the CDK CLI uploads the asset: the boot must ask for exactly that object.
        wheelhouse_url = resolve({"Fn::Sub": asset_url}, values)
        root = stack.enter_context(fresh_root(image, work / "root"))
        stack.callback(stop_unit, root)
        install_stand_ins(root, work / "wheelhouse.zip", wheelhouse_url, endpoint)
        with report.step("first boot of the rendered user data (arm64, emulated)"):
            code = boot(root, script, work / "cloud-init-output.log")
        report.lines.append(
            f"      user data: sha256 {digest}, output in {work / 'cloud-init-output.log'}"
        )
        recorded = calls(root)
        report.lines.append("      recorded boot calls:")
        report.lines += [f"        {shlex.join(call)}" for call in recorded]
        if code != 0:
            tail = (
                (work / "cloud-init-output.log")
                .read_text(errors="replace")
                .strip()
                .splitlines()[-5:]
            )
            raise CheckError(f"the boot script exited with {code}: {' | '.join(tail)}")
        check_calls(report, recorded, instance_id, wheelhouse_url)
        checks(
            report,
            root,
            work,
            endpoint,
            template,
            values,
            read_arn,
            write_arn,
            read_value,
            write_value,
        )
    return report


def check_calls(report: Report, recorded: list[list[str]], instance_id: str, url: str) -> None:
    expected = [
        ["dnf", "install", "-y", "--setopt=install_weak_deps=False", *DNF_PACKAGES],
        ["aws", "s3", "cp", "--only-show-errors", "--region", REGION, url, WHEELHOUSE_ZIP],
        ["sysctl", "-p", "/etc/sysctl.d/90-logd.conf"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "logd.service"],
        [
            "aws", "cloudformation", "signal-resource", "--region", REGION, "--stack-name", STACK,
            "--logical-resource-id", instance_id, "--unique-id", INSTANCE_ID, "--status", "SUCCESS",
        ],
    ]  # fmt: skip
    if recorded == expected:
        report.ok(
            "boot calls", "dnf, the wheelhouse copy, sysctl, systemctl, then one SUCCESS signal"
        )
    else:
        report.fail("boot calls", f"expected {len(expected)} calls in order, got {recorded}")


def checks(
    report: Report,
    root: Path,
    work: Path,
    endpoint: str,
    template: dict[str, Any],
    values: dict[str, str],
    read_arn: str,
    write_arn: str,
    read_value: str,
    write_value: str,
) -> None:
    def attempt(name: str, check: Callable[[], str]) -> None:
        try:
            report.ok(name, check())
        except Exception as err:  # each check reports its own failure, then the next runs
            report.fail(name, f"{type(err).__name__}: {err}")

    handler = rotation_handler()
    attempt("unit", lambda: unit_verifies(root, work))

    def healthz() -> str:
        status, body = http_get("/healthz")
        if status != 200:
            raise CheckError(f"/healthz answered {status}")
        return f"200 {body.decode().strip()}"

    attempt("/healthz", healthz)

    def accept_path() -> str:
        status, body = http_get("/info", read_value)
        udp = json.loads(body)["udp"]
        if status != 200 or udp["accept_path"] != "c":
            raise CheckError(f"/info says udp.accept_path is {udp.get('accept_path')!r}, not 'c'")
        return f"c (built from the sdist on arm64), rcvbuf {udp['rcvbuf_bytes']} bytes"

    attempt("C accept path", accept_path)

    def write_read(write: str, read: str, label: str) -> str:
        text = f"{label} {uuid.uuid4().hex}"
        send_event(handler, write, text)
        wait_until(lambda: read_back(read, text), 20, f"the {label} event never came back")
        return f"sent over UDP {UDP_PORT}, read back over HTTP {HTTP_PORT}"

    attempt("signed write read back", lambda: write_read(write_value, read_value, "first boot"))

    def curl_output() -> str:
        line = resolve(template["Outputs"]["CurlCommand"]["Value"], values)
        text = f"curl line {uuid.uuid4().hex}"
        send_event(handler, write_value, text)
        wait_until(
            lambda: read_back(read_value, text), 20, "the event for the curl line never came back"
        )
        env = {
            "PATH": f"{awscli(work)}:/usr/bin:/bin",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "HOME": str(work),
        }
        result = subprocess.run(  # noqa: S603 - the stack's own output line
            ["bash", "-c", line],  # noqa: S607 - bash from PATH, as a person would run it
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0 or text not in result.stdout:
            error = result.stderr.strip()[-200:]
            raise CheckError(f"the CurlCommand output failed ({result.returncode}): {error}")
        return (
            f"{len(json.loads(result.stdout))} events (address swapped to 127.0.0.1; real AWS CLI)"
        )

    attempt("CurlCommand output", curl_output)

    def rotations() -> str:
        # The Lambda runtime's environment (it sets both region names), moto's endpoint.
        os.environ |= {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "LOGD_PING_TARGET": f"127.0.0.1:{UDP_PORT}",
            "LOGD_PING_TIMEOUT": "60",
        }
        function = rotation_function(endpoint)
        for arn in (read_arn, write_arn):
            rotate(handler, endpoint, function, arn, immediately=False)
        new_read = rotate(handler, endpoint, function, read_arn, immediately=True)
        new_write = rotate(handler, endpoint, function, write_arn, immediately=True)
        if new_read == read_value or new_write == write_value:
            raise CheckError("a rotation left AWSCURRENT as it was")
        write_read(new_write, new_read, "after rotation")
        return (
            "deploy-time test of both schedules passed; both secrets rotated "
            "(PING/PONG with each pending key), then a write with the new keys read back"
        )

    attempt("rotation", rotations)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy_check", description=__doc__)
    parser.add_argument("--work", type=Path, default=REPO / "build/deploy-check")
    parser.add_argument("--cache", type=Path, default=Path("/var/cache/logd-deploy-check"))
    parser.add_argument("--wheelhouse", type=Path, default=REPO / "build/wheelhouse")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        report = run(args.work.resolve(), args.cache, args.wheelhouse.resolve())
    except CheckError as err:
        print(f"deploy-check: FAILED: {err}", file=sys.stderr)
        return 1
    print("\ndeploy-check summary")
    print("\n".join(report.lines))
    print(GAPS)
    verdict = "FAILED" if report.failed else "passed"
    print(f"deploy-check {verdict} in {time.monotonic() - t0:.0f} s")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
