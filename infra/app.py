"""The CDK app: `make synth` / `make deploy` run it through the CDK CLI (see infra/cdk.json).

It reads the context options, checks the wheelhouse that `make wheel` built, and
runs the cdk-nag AWS Solutions checks on every synth: a finding that is not
acknowledged (with a reason, next to its resource) fails the synth.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.components.rotation import CODE_DIR
from infra.settings import DeploySettings, SettingsError
from infra.stacks.logd_stack import LogdStack

STACK_NAME = "Logd"
WHEELHOUSE = Path(__file__).resolve().parents[1] / "build" / "wheelhouse"


class WheelhouseError(ValueError):
    """The wheelhouse is missing or has no logd wheel; the message is one sentence."""


def check_wheelhouse(path: Path) -> Path:
    """The wheelhouse directory, if it holds a logd wheel (the host cannot download one)."""
    if not any(path.glob("logd-*.whl")):
        raise WheelhouseError(f"{path} has no logd wheel: run `make wheel` first")
    return path


def build_app(
    *,
    context: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    wheelhouse: Path = WHEELHOUSE,
    rotation_code: Path = CODE_DIR,
    environ: Mapping[str, str] = os.environ,
    builtin_validation: bool = True,
) -> tuple[App, LogdStack]:
    """The app with the `Logd` stack and cdk-nag attached (tests pass context and paths).

    `builtin_validation` is CDK's own CloudFormation check, 13 of the 14 seconds a synth
    takes; tests turn it off for all but the default synth and run cfn-lint instead.
    """
    app = App(
        context=dict(context or {}),
        outdir=outdir,
        builtin_cloud_formation_validation=builtin_validation,
    )
    settings = DeploySettings.from_context(app.node.try_get_context)
    stack = LogdStack(
        app,
        STACK_NAME,
        settings=settings,
        wheelhouse=wheelhouse,
        rotation_code=rotation_code,
        env=_environment(settings, environ),
        description="logd: signed UDP logs in, HTTP reads out, secrets rotated",
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def _environment(settings: DeploySettings, environ: Mapping[str, str]) -> Environment | None:
    """An existing VPC is looked up in the CLI's account and region; otherwise any."""
    if not settings.vpc_id:
        return None
    account, region = environ.get("CDK_DEFAULT_ACCOUNT"), environ.get("CDK_DEFAULT_REGION")
    if not account or not region:
        raise SettingsError("context vpc_id needs AWS credentials and a region to look the VPC up")
    return Environment(account=account, region=region)


def main() -> int:
    try:
        check_wheelhouse(WHEELHOUSE)
        app, _ = build_app()
    except (SettingsError, WheelhouseError) as err:
        print(f"logd infra: {err}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
