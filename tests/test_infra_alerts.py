"""Alerts to SNS in the CDK app (`-c alerts_sns_topic_arn=...`): an SNS interface endpoint
(the host has no NAT) and sns:Publish on that topic only. The default deployment has
neither: test_infra.py asserts its exact endpoints and the host role's exact grants.

Synthesized once per session with cdk-nag on; cfn-lint checks the template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_infra import CONTEXT, VPC_CIDR, Synth, _as_list, _load, _statements, assert_cfn_lint_clean

from infra.app import build_app
from infra.settings import DeploySettings, SettingsError

pytestmark = pytest.mark.timeout(300)

TOPIC = "arn:aws:sns:eu-west-1:111111111111:logd-alerts"


@pytest.fixture(scope="session")
def alerts(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    wheelhouse = tmp_path_factory.mktemp("wheelhouse-alerts")
    (wheelhouse / "logd-0.0.0-py3-none-any.whl").write_bytes(b"stand-in")
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(
        context=CONTEXT | {"alerts_sns_topic_arn": TOPIC},
        outdir=str(outdir),
        wheelhouse=wheelhouse,
        builtin_validation=False,  # cfn-lint below
    )
    app.synth()
    return _load(stack, outdir)


def test_the_host_may_publish_to_the_alerts_topic_only(alerts: Synth) -> None:
    publish = [
        s for s in _statements(alerts, "logd host") if "sns:Publish" in _as_list(s["Action"])
    ]
    assert publish == [{"Action": "sns:Publish", "Effect": "Allow", "Resource": TOPIC}]
    everything: list[Any] = [
        action
        for policy in alerts.of_type("AWS::IAM::Policy").values()
        for statement in policy["PolicyDocument"]["Statement"]
        for action in _as_list(statement["Action"])
    ]
    assert everything.count("sns:Publish") == 1  # no other role got it


def test_an_sns_endpoint_takes_https_from_the_vpc(alerts: Synth) -> None:
    (endpoint,) = [
        props
        for props in alerts.of_type("AWS::EC2::VPCEndpoint").values()
        if props["ServiceName"]["Fn::Join"][1][-1] == ".sns"
    ]
    assert endpoint["VpcEndpointType"] == "Interface"
    assert endpoint["PrivateDnsEnabled"] is True
    (group_ref,) = endpoint["SecurityGroupIds"]
    group = alerts.resources[group_ref["Fn::GetAtt"][0]]["Properties"]
    assert [
        (r["IpProtocol"], r["FromPort"], r["CidrIp"]) for r in group["SecurityGroupIngress"]
    ] == [("tcp", 443, VPC_CIDR)]


def test_cfn_lint_finds_no_errors(alerts: Synth) -> None:
    assert_cfn_lint_clean(alerts)


def test_a_bad_alerts_topic_is_refused_in_one_sentence() -> None:
    with pytest.raises(SettingsError, match="context alerts_sns_topic_arn must be an SNS topic"):
        DeploySettings.from_context({"alerts_sns_topic_arn": "ops-alerts"}.get)


def test_no_alerts_topic_by_default(tmp_path: Path) -> None:
    assert DeploySettings.from_context({}.get).alerts_sns_topic_arn is None
