"""The CDK app's template, synthesized in-process with no AWS account: the network, the host,
the secrets and their rotation, least-privilege IAM, cdk-nag and cfn-lint.

The default deployment is synthesized once per session exactly as `make synth` does it
(cdk.json's feature flags, CDK's CloudFormation checks and cdk-nag on), except that the
wheelhouse is a stand-in directory: the template only sees the asset's hash, and the real
one (`make wheel`) needs PyPI. An existing-VPC deployment is synthesized once too, from a
VPC lookup answered in the context the way the CDK CLI caches it. Assertions name
resources by their properties (descriptions, ports, references), never by logical id.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Environment, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Match, Template

from infra.app import build_app
from infra.components.host import SESSION_MANAGER_ACTIONS
from infra.components.network import LogdNetwork
from infra.components.rotation import CODE_DIR, PING_TIMEOUT_S
from infra.stacks.logd_stack import ROTATION_ACTIONS

# The first test also pays for the session's synths (30 s on a busy 2-core machine).
pytestmark = pytest.mark.timeout(300)

INFRA = Path(__file__).resolve().parents[1] / "infra"
# What the CDK CLI passes: cdk.json's context, and no stack traces in metadata.
CONTEXT = json.loads((INFRA / "cdk.json").read_text())["context"] | {
    "aws:cdk:disable-stack-trace": True
}
VPC_CIDR = "10.0.0.0/16"
MAIN_PORTS = [("udp", 6102), ("tcp", 6101)]
ALARM_TOPIC = "arn:aws:sns:eu-west-1:111111111111:ops-alerts"
# The one wheelhouse object in the CDK bootstrap bucket (a content hash, no wildcard).
WHEELHOUSE_OBJECT = (
    r"arn:\{AWS::Partition\}:s3:::cdk-\w+-assets-\{AWS::AccountId\}-\{AWS::Region\}"
    r"/[0-9a-f]{64}\.zip"
)
# Actions that take no resource ARN: the only ones allowed on Resource "*".
UNSCOPABLE = set(SESSION_MANAGER_ACTIONS) | {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


@dataclass(frozen=True)
class Synth:
    """One synthesized stack: its template (as JSON and for aws_cdk.assertions) and files."""

    stack: Stack
    template: Template
    resources: Mapping[str, Any]
    outdir: Path

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        """Logical id -> properties of every resource of one CloudFormation type."""
        return {
            rid: r.get("Properties", {}) for rid, r in self.resources.items() if r["Type"] == kind
        }

    def one(self, kind: str, **where: str) -> tuple[str, dict[str, Any]]:
        """The single resource of `kind` whose properties start with the given text values."""
        found = [
            (rid, props)
            for rid, props in self.of_type(kind).items()
            if all(str(props.get(key, "")).startswith(value) for key, value in where.items())
        ]
        assert len(found) == 1, f"{len(found)} {kind} match {where}"
        return found[0]


def _load(stack: Stack, outdir: Path) -> Synth:
    data = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    return Synth(stack, Template.from_json(data), data["Resources"], outdir)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for `make wheel`'s output (which needs PyPI and takes half a minute)."""
    path = tmp_path_factory.mktemp("wheelhouse")
    (path / "logd-0.0.0-py3-none-any.whl").write_bytes(b"stand-in")
    return path


@pytest.fixture(scope="session")
def default(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Synth:
    """The default deployment; app.synth() raises if cdk-nag or CDK's checks find anything."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(context=CONTEXT, outdir=str(outdir), wheelhouse=wheelhouse)
    app.synth()
    return _load(stack, outdir)


LOOKUP_ENV = {"CDK_DEFAULT_ACCOUNT": "111111111111", "CDK_DEFAULT_REGION": "eu-west-1"}
EXISTING_VPC_ID = "vpc-0123456789abcdef0"


@pytest.fixture(scope="session")
def lookup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Context that answers the lookup of EXISTING_VPC_ID as the CDK CLI would cache it."""
    return {
        _lookup_key(EXISTING_VPC_ID, LOOKUP_ENV, tmp_path_factory.mktemp("probe")): EXISTING_VPC
    }


@pytest.fixture(scope="session")
def existing(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, lookup: dict[str, Any]
) -> Synth:
    """Into an existing VPC (public + private subnets), with every option set."""
    options = {
        "vpc_id": EXISTING_VPC_ID,
        "create_endpoints": "false",
        "allowed_cidrs": "172.20.0.0/16, 192.168.7.0/24",
        "allowed_prefix_list": "pl-0a1b2c3d4e5f60718",
        "instance_type": "m7g.medium",
        "rotation_days": "7",
        "alarm_topic_arn": ALARM_TOPIC,
    }
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(
        context=CONTEXT | options | lookup,
        outdir=str(outdir),
        wheelhouse=wheelhouse,
        environ=LOOKUP_ENV,
        builtin_validation=False,  # the default synth runs it; cfn-lint covers templates
    )
    app.synth()
    return _load(stack, outdir)


def _lookup_key(vpc_id: str, env: Mapping[str, str], outdir: Path) -> str:
    """The context key the CDK CLI would cache this VPC lookup under (asked of CDK itself)."""
    app = App(outdir=str(outdir), builtin_cloud_formation_validation=False)
    probe = Stack(
        app,
        "Probe",
        env=Environment(account=env["CDK_DEFAULT_ACCOUNT"], region=env["CDK_DEFAULT_REGION"]),
    )
    ec2.Vpc.from_lookup(probe, "Vpc", vpc_id=vpc_id)
    app.synth()
    (missing,) = json.loads((outdir / "manifest.json").read_text())["missing"]
    return str(missing["key"])


PUBLIC, PRIVATE = "subnet-0aaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbb"
EXISTING_VPC = {
    "vpcId": "vpc-0123456789abcdef0",
    "vpcCidrBlock": "10.40.0.0/16",
    "ownerAccountId": "111111111111",
    "availabilityZones": [],
    "subnetGroups": [
        {
            "name": "Public",
            "type": "Public",
            "subnets": [
                {
                    "subnetId": f"{PUBLIC}{i}",
                    "cidr": f"10.40.{i}.0/24",
                    "availabilityZone": f"eu-west-1{az}",
                    "routeTableId": f"rtb-0aaaaaaaaaaaaaaa{i}",
                }
                for i, az in enumerate("ab")
            ],
        },
        {
            "name": "Private",
            "type": "Private",
            "subnets": [
                {
                    "subnetId": f"{PRIVATE}{i}",
                    "cidr": f"10.40.1{i}.0/24",
                    "availabilityZone": f"eu-west-1{az}",
                    "routeTableId": f"rtb-0bbbbbbbbbbbbbbb{i}",
                }
                for i, az in enumerate("ab")
            ],
        },
    ],
}


# --- security groups -----------------------------------------------------------------


def _ingress(synth: Synth, group_id: str) -> set[tuple[str, int, int, str]]:
    """(protocol, from, to, source) of every ingress rule of one group, inline or separate."""
    rules = list(synth.of_type("AWS::EC2::SecurityGroup")[group_id].get("SecurityGroupIngress", []))
    rules += [
        p
        for p in synth.of_type("AWS::EC2::SecurityGroupIngress").values()
        if p["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    ]
    return {
        (
            r["IpProtocol"],
            r["FromPort"],
            r["ToPort"],
            r.get("CidrIp") or r.get("SourcePrefixListId") or _ref_id(r["SourceSecurityGroupId"]),
        )
        for r in rules
    }


def _ref_id(value: Any) -> str:
    """The logical id a Ref / Fn::GetAtt points at."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


def test_logd_ports_are_open_to_the_vpc_and_the_rotation_lambda_only(default: Synth) -> None:
    host_sg, _ = default.one("AWS::EC2::SecurityGroup", GroupDescription="logd: UDP writes")
    lambda_sg, _ = default.one("AWS::EC2::SecurityGroup", GroupDescription="logd rotation")
    assert _ingress(default, host_sg) == {
        ("udp", 6102, 6102, VPC_CIDR),
        ("tcp", 6101, 6101, VPC_CIDR),
        ("udp", 6102, 6102, lambda_sg),
    }


def test_configured_networks_replace_the_vpc_range(existing: Synth) -> None:
    host_sg, _ = existing.one("AWS::EC2::SecurityGroup", GroupDescription="logd: UDP writes")
    lambda_sg, _ = existing.one("AWS::EC2::SecurityGroup", GroupDescription="logd rotation")
    sources = ["172.20.0.0/16", "192.168.7.0/24", "pl-0a1b2c3d4e5f60718"]
    assert _ingress(existing, host_sg) == {
        *((proto, port, port, source) for source in sources for proto, port in MAIN_PORTS),
        ("udp", 6102, 6102, lambda_sg),
    }


@pytest.mark.parametrize("which", ["default", "existing"])
def test_guard_against_ingress_from_anywhere_or_ssh(
    which: str, request: pytest.FixtureRequest
) -> None:
    synth: Synth = request.getfixturevalue(which)
    rules = [
        rule
        for props in synth.of_type("AWS::EC2::SecurityGroup").values()
        for rule in props.get("SecurityGroupIngress", [])
    ] + list(synth.of_type("AWS::EC2::SecurityGroupIngress").values())
    assert rules
    for rule in rules:
        assert rule.get("CidrIp") not in ("0.0.0.0/0",)
        assert rule.get("CidrIpv6") not in ("::/0",)
        assert rule["IpProtocol"] != "-1"
        assert not rule["FromPort"] <= 22 <= rule["ToPort"]


def test_rotation_lambda_egress_is_https_to_the_vpc_and_ping_to_logd(default: Synth) -> None:
    host_sg, _ = default.one("AWS::EC2::SecurityGroup", GroupDescription="logd: UDP writes")
    lambda_sg, props = default.one("AWS::EC2::SecurityGroup", GroupDescription="logd rotation")
    egress = {(r["IpProtocol"], r["FromPort"], r["CidrIp"]) for r in props["SecurityGroupEgress"]}
    egress |= {
        (r["IpProtocol"], r["FromPort"], _ref_id(r["DestinationSecurityGroupId"]))
        for r in default.of_type("AWS::EC2::SecurityGroupEgress").values()
        if _ref_id(r["GroupId"]) == lambda_sg
    }
    assert egress == {("tcp", 443, VPC_CIDR), ("udp", 6102, host_sg)}


# --- network -------------------------------------------------------------------------


def test_default_vpc_is_isolated_and_reaches_aws_through_endpoints(default: Synth) -> None:
    for kind in ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EIP"):
        default.template.resource_count_is(kind, 0)
    subnets = default.of_type("AWS::EC2::Subnet").values()
    assert [s["MapPublicIpOnLaunch"] for s in subnets] == [False]
    services = {
        (p["VpcEndpointType"], p["ServiceName"]["Fn::Join"][1][-1], p.get("PrivateDnsEnabled"))
        for p in default.of_type("AWS::EC2::VPCEndpoint").values()
    }
    assert services == {
        ("Gateway", ".s3", None),
        ("Interface", ".secretsmanager", True),
        ("Interface", ".cloudformation", True),
        ("Interface", ".ssm", True),
        ("Interface", ".ssmmessages", True),
        ("Interface", ".ec2messages", True),
    }
    default.template.resource_count_is("AWS::EC2::FlowLog", 1)


def test_host_boots_only_after_the_endpoints_it_installs_through(default: Synth) -> None:
    instance, _ = default.one("AWS::EC2::Instance")
    endpoints = set(default.of_type("AWS::EC2::VPCEndpoint"))
    assert endpoints <= set(default.resources[instance]["DependsOn"])


def test_s3_endpoint_reads_only_the_wheelhouse_and_the_al2023_repositories(
    default: Synth,
) -> None:
    _, props = default.one("AWS::EC2::VPCEndpoint", VpcEndpointType="Gateway")
    (statement,) = props["PolicyDocument"]["Statement"]
    assert statement["Action"] == "s3:GetObject"
    wheelhouse, repos = (_join(r) for r in statement["Resource"])
    assert re.fullmatch(WHEELHOUSE_OBJECT, wheelhouse)
    assert repos == "arn:{AWS::Partition}:s3:::al2023-repos-{AWS::Region}-de612dc2/*"


def _join(value: Any) -> str:
    """An Fn::Join / Fn::Sub / Ref as readable text: references become {LogicalId}."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return str(sep).join(_join(p) for p in parts)
    if "Fn::Sub" in value:
        return re.sub(r"\$\{([^}]+)\}", r"{\1}", value["Fn::Sub"])
    if "Ref" in value:
        return "{" + value["Ref"] + "}"
    if "Fn::GetAtt" in value:
        return "{" + ".".join(value["Fn::GetAtt"]) + "}"
    raise AssertionError(f"unexpected value {value!r}")


def test_existing_vpc_gets_no_new_network_and_the_host_a_private_subnet(existing: Synth) -> None:
    for kind in ("AWS::EC2::VPC", "AWS::EC2::VPCEndpoint", "AWS::EC2::FlowLog"):
        existing.template.resource_count_is(kind, 0)
    _, instance = existing.one("AWS::EC2::Instance")
    assert instance["NetworkInterfaces"][0]["SubnetId"].startswith(PRIVATE)
    _, function = existing.one("AWS::Lambda::Function", Handler="handler.handler")
    assert all(s.startswith(PRIVATE) for s in function["VpcConfig"]["SubnetIds"])
    _, lambda_sg = existing.one("AWS::EC2::SecurityGroup", GroupDescription="logd rotation")
    assert lambda_sg["SecurityGroupEgress"][0]["CidrIp"] == "10.40.0.0/16"


def test_existing_vpc_keeps_its_s3_access_when_we_add_the_endpoints(
    lookup: dict[str, Any],
) -> None:
    """Our endpoint policy would also bind the VPC's other workloads: not applied there."""
    app = App(context=lookup, builtin_cloud_formation_validation=False)
    env = Environment(
        account=LOOKUP_ENV["CDK_DEFAULT_ACCOUNT"], region=LOOKUP_ENV["CDK_DEFAULT_REGION"]
    )
    stack = Stack(app, "Net", env=env)
    network = LogdNetwork(
        stack, "Network", vpc_id=EXISTING_VPC_ID, vpc_cidr="unused", create_endpoints=True
    )
    network.allow_s3_reads("arn:aws:s3:::bucket/key")
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Gateway",
            "RouteTableIds": ["rtb-0bbbbbbbbbbbbbbb0", "rtb-0bbbbbbbbbbbbbbb1"],
            "PolicyDocument": Match.absent(),
        },
    )
    template.resource_count_is("AWS::EC2::VPCEndpoint", 6)


# --- host ----------------------------------------------------------------------------


def test_host_is_graviton_al2023_imdsv2_encrypted_without_key_or_public_ip(default: Synth) -> None:
    default.template.has_resource_properties(
        "AWS::EC2::Instance",
        {
            "InstanceType": "t4g.small",
            "ImageId": "resolve:ssm:/aws/service/ami-amazon-linux-latest/"
            "al2023-ami-kernel-default-arm64",
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": Match.object_like({"Encrypted": True})}
            ],
            "NetworkInterfaces": [Match.object_like({"AssociatePublicIpAddress": False})],
            "KeyName": Match.absent(),
        },
    )


def test_instance_type_comes_from_the_context(existing: Synth) -> None:
    existing.template.has_resource_properties("AWS::EC2::Instance", {"InstanceType": "m7g.medium"})


def _user_data(synth: Synth) -> str:
    _, instance = synth.one("AWS::EC2::Instance")
    return _join(instance["UserData"]["Fn::Base64"])


def test_unit_points_logd_at_both_secret_arns_and_its_state_directory(default: Synth) -> None:
    read, _ = default.one("AWS::SecretsManager::Secret", Description="logd read")
    write, _ = default.one("AWS::SecretsManager::Secret", Description="logd write")
    script = _user_data(default)
    assert f"\nEnvironment=LOGD_READ_SECRET_ID={{{read}}}\n" in script
    assert f"\nEnvironment=LOGD_WRITE_SECRET_ID={{{write}}}\n" in script
    assert "\nEnvironment=LOGD_DATA_DIR=/var/lib/logd\n" in script
    assert "\nStateDirectory=logd\n" in script
    assert "\nEnvironment=AWS_REGION={AWS::Region}\n" in script


def test_user_data_installs_the_wheelhouse_asset_offline(default: Synth) -> None:
    script = _user_data(default)
    url = re.search(r"aws s3 cp .* '(s3://[^']+)' ", script)
    assert url is not None
    assert re.fullmatch(
        r"s3://cdk-\w+-assets-\{AWS::AccountId\}-\{AWS::Region\}/[0-9a-f]{64}\.zip", url.group(1)
    )
    assert "pip install --no-index --find-links /opt/logd/wheelhouse 'logd[server,aws]'" in script


# --- secrets and rotation ------------------------------------------------------------


def test_two_long_generated_secrets_without_punctuation(default: Synth) -> None:
    secrets = default.of_type("AWS::SecretsManager::Secret").values()
    assert sorted(s["Description"].split(":")[0] for s in secrets) == ["logd read", "logd write"]
    for secret in secrets:
        generator = secret["GenerateSecretString"]
        assert generator["PasswordLength"] >= 43  # >= 256 bits from 62 symbols
        assert generator["ExcludePunctuation"] is True
        assert generator["IncludeSpace"] is False


def test_one_schedule_per_secret_on_the_lambda_after_the_instance(default: Synth) -> None:
    function, _ = default.one("AWS::Lambda::Function", Handler="handler.handler")
    instance, _ = default.one("AWS::EC2::Instance")
    schedules = {
        rid: r
        for rid, r in default.resources.items()
        if r["Type"] == "AWS::SecretsManager::RotationSchedule"
    }
    secrets = set(default.of_type("AWS::SecretsManager::Secret"))
    assert {_ref_id(s["Properties"]["SecretId"]) for s in schedules.values()} == secrets
    for schedule in schedules.values():
        props = schedule["Properties"]
        assert props["RotationLambdaARN"] == {"Fn::GetAtt": [function, "Arn"]}
        assert props["RotationRules"] == {"AutomaticallyAfterDays": 30}
        assert props["RotateImmediatelyOnUpdate"] is False
        assert instance in schedule["DependsOn"]


def test_rotation_days_come_from_the_context(existing: Synth) -> None:
    for props in existing.of_type("AWS::SecretsManager::RotationSchedule").values():
        assert props["RotationRules"] == {"AutomaticallyAfterDays": 7}


def test_only_this_accounts_secrets_manager_may_invoke_the_lambda_for_these_secrets(
    default: Synth,
) -> None:
    function, _ = default.one("AWS::Lambda::Function", Handler="handler.handler")
    permissions = default.of_type("AWS::Lambda::Permission").values()
    assert {_ref_id(p["SourceArn"]) for p in permissions} == set(
        default.of_type("AWS::SecretsManager::Secret")
    )
    for permission in permissions:
        assert permission["Principal"] == "secretsmanager.amazonaws.com"
        assert permission["FunctionName"] == {"Fn::GetAtt": [function, "Arn"]}
        assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_rotation_lambda_runs_in_the_vpc_and_pings_the_instance(default: Synth) -> None:
    instance, _ = default.one("AWS::EC2::Instance")
    _, function = default.one("AWS::Lambda::Function", Handler="handler.handler")
    version = re.fullmatch(r"python(\d+)\.(\d+)", function["Runtime"])
    assert version is not None
    assert (int(version.group(1)), int(version.group(2))) >= (3, 12)
    assert function["Timeout"] >= max(30, PING_TIMEOUT_S + 10)
    assert function["VpcConfig"]["SubnetIds"]
    env = function["Environment"]["Variables"]
    assert _join(env["LOGD_PING_TARGET"]) == f"{{{instance}.PrivateIp}}:6102"
    assert int(env["LOGD_PING_TIMEOUT"]) == PING_TIMEOUT_S


def test_lambda_asset_is_the_handler_without_tests(default: Synth) -> None:
    _, function = default.one("AWS::Lambda::Function", Handler="handler.handler")
    asset_hash = function["Code"]["S3Key"].removesuffix(".zip")
    asset = default.outdir / f"asset.{asset_hash}"
    shipped = sorted(p.relative_to(asset).as_posix() for p in asset.rglob("*"))
    expected = sorted(
        p.name
        for p in CODE_DIR.glob("*.py")
        if not p.name.startswith("test_") and p.name != "conftest.py"
    )
    assert "handler.py" in shipped
    assert shipped == expected
    assert (asset / "handler.py").read_bytes() == (CODE_DIR / "handler.py").read_bytes()


def test_rotation_failure_raises_an_alarm(default: Synth) -> None:
    function, _ = default.one("AWS::Lambda::Function", Handler="handler.handler")
    default.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "Errors",
            "Namespace": "AWS/Lambda",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function}}],
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        },
    )


def test_alarm_notifies_the_configured_topic(existing: Synth) -> None:
    existing.template.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": "Errors", "AlarmActions": [ALARM_TOPIC]}
    )


def test_alarm_has_no_action_by_default(default: Synth) -> None:
    default.template.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": "Errors", "AlarmActions": Match.absent()}
    )


# --- IAM -----------------------------------------------------------------------------


def _statements(synth: Synth, role_description: str) -> list[dict[str, Any]]:
    """Every statement of the policies attached to the role with this description."""
    role, props = synth.one("AWS::IAM::Role", Description=role_description)
    assert "ManagedPolicyArns" not in props
    return [
        statement
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Roles"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_host_role_reads_only_its_two_secrets_and_its_wheelhouse(default: Synth) -> None:
    secrets = sorted(f"{{{s}}}" for s in default.of_type("AWS::SecretsManager::Secret"))
    granted = {
        frozenset(_as_list(s["Action"])): sorted(map(_join, _as_list(s["Resource"])))
        for s in _statements(default, "logd host")
    }
    read = frozenset({"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"})
    session = frozenset(SESSION_MANAGER_ACTIONS)
    signal = frozenset({"cloudformation:SignalResource"})
    assert set(granted) == {session, read, signal, frozenset({"s3:GetObject"})}
    assert granted[session] == ["*"]
    assert granted[read] == secrets
    assert granted[signal] == ["{AWS::StackId}"]  # this stack only
    (wheelhouse,) = granted[frozenset({"s3:GetObject"})]
    assert re.fullmatch(WHEELHOUSE_OBJECT, wheelhouse)


def test_lambda_role_gets_only_what_rotation_needs(default: Synth) -> None:
    _, function = default.one("AWS::Lambda::Function", Handler="handler.handler")
    log_group = _ref_id(function["LoggingConfig"]["LogGroup"])
    granted = {
        frozenset(_as_list(s["Action"])): sorted(map(_join, _as_list(s["Resource"])))
        for s in _statements(default, "logd rotation")
    }
    assert granted == {
        frozenset(UNSCOPABLE - set(SESSION_MANAGER_ACTIONS)): ["*"],
        frozenset(ROTATION_ACTIONS): sorted(
            f"{{{s}}}" for s in default.of_type("AWS::SecretsManager::Secret")
        ),
        frozenset({"logs:CreateLogStream", "logs:PutLogEvents"}): [f"{{{log_group}.Arn}}"],
    }


def test_guard_against_wildcard_resources_that_could_be_scoped(default: Synth) -> None:
    for policy in default.of_type("AWS::IAM::Policy").values():
        for statement in policy["PolicyDocument"]["Statement"]:
            if "*" in _as_list(statement["Resource"]):
                assert set(_as_list(statement["Action"])) <= UNSCOPABLE
            assert not any(a.endswith("*") for a in _as_list(statement["Action"]))


# --- outputs -------------------------------------------------------------------------


def test_outputs_give_ids_arns_and_ready_commands(default: Synth) -> None:
    outputs = {name: _join(o["Value"]) for name, o in default.template.to_json()["Outputs"].items()}
    instance, _ = default.one("AWS::EC2::Instance")
    read, _ = default.one("AWS::SecretsManager::Secret", Description="logd read")
    assert outputs["InstanceId"] == f"{{{instance}}}"
    assert outputs["PrivateIp"] == f"{{{instance}.PrivateIp}}"
    assert {outputs["ReadSecretArn"], outputs["WriteSecretArn"]} == {
        f"{{{s}}}" for s in default.of_type("AWS::SecretsManager::Secret")
    }
    assert outputs["CurlCommand"] == (
        'curl -H "Authorization: $(aws secretsmanager get-secret-value --region {AWS::Region} '
        f'--secret-id {{{read}}} --query SecretString --output text)" '
        f'"http://{{{instance}.PrivateIp}}:6101/?limit=20"'
    )
    assert outputs["SessionCommand"] == (
        f"aws ssm start-session --region {{AWS::Region}} --target {{{instance}}}"
    )


# --- checks --------------------------------------------------------------------------

# Every cdk-nag / CloudFormation check this app acknowledges, where, and (in the code) why.
CFN_IMAGE_ID = ("Logd/Host/Instance/Resource", "CloudFormation-Validate::E1152")
ACKNOWLEDGED = {
    ("Logd/Host/Role/DefaultPolicy/Resource", "AwsSolutions::AwsSolutions-IAM5[Resource::*]"),
    ("Logd/Host/Instance/Resource", "AwsSolutions::AwsSolutions-EC28"),
    ("Logd/Host/Instance/Resource", "AwsSolutions::AwsSolutions-EC29"),
    ("Logd/Rotation/Role/DefaultPolicy/Resource", "AwsSolutions::AwsSolutions-IAM5[Resource::*]"),
    CFN_IMAGE_ID,
}


@pytest.mark.parametrize("which", ["default", "existing"])
def test_checks_pass_with_only_known_acknowledgments(
    which: str, request: pytest.FixtureRequest
) -> None:
    """cdk-nag (and CDK's own check, where on) ran, found nothing unacknowledged, and every
    acknowledgment is one of ours with a one-line reason."""
    synth: Synth = request.getfixturevalue(which)
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    plugins = {plugin["pluginName"]: plugin for plugin in report["pluginReports"]}
    assert "AwsSolutions" in plugins
    acknowledged = set()
    for plugin in plugins.values():
        assert plugin["conclusion"] == "success"
        assert plugin["violations"] == []
        for finding in plugin.get("suppressedViolations", []):
            assert len(finding["reason"]) >= 30
            assert "\n" not in finding["reason"]
            (construct,) = finding["violatingConstructs"]
            acknowledged.add((construct["constructPath"], finding["acknowledgedId"]))
    expected = ACKNOWLEDGED if which == "default" else ACKNOWLEDGED - {CFN_IMAGE_ID}
    assert acknowledged == expected


def assert_cfn_lint_clean(*synths: Synth) -> None:
    """cfn-lint finds no errors in the synthesized templates."""
    templates = [str(synth.outdir / "Logd.template.json") for synth in synths]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "json", *templates],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    findings = json.loads(result.stdout or "[]")
    assert [f for f in findings if f["Level"] == "Error"] == []
    assert result.returncode & 2 == 0, result.stderr  # cfn-lint's exit bit for errors


def test_cfn_lint_finds_no_errors(default: Synth, existing: Synth) -> None:
    assert_cfn_lint_clean(default, existing)


# --- readiness: CloudFormation waits for the first boot ------------------------------


def _signal_calls(script: str) -> list[str]:
    """The boot script's `signal STATUS` lines and the signal-resource call they make."""
    return re.findall(r"^(?:.*\bsignal (?:SUCCESS|FAILURE)\b.*|.*signal-resource.*)$", script, re.M)


def test_instance_is_created_only_once_its_boot_signals(default: Synth) -> None:
    instance, _ = default.one("AWS::EC2::Instance")
    policy = default.resources[instance]["CreationPolicy"]["ResourceSignal"]
    assert policy["Count"] == 1
    minutes = re.fullmatch(r"PT(\d+)M", policy["Timeout"])
    assert minutes is not None
    assert 10 <= int(minutes.group(1)) <= 60
    script = _user_data(default)
    # The signal names this very instance (its logical id carries the user-data hash).
    assert (
        "aws cloudformation signal-resource --region {AWS::Region} "
        "--stack-name '{AWS::StackName}' \\\n"
        f"    --logical-resource-id '{instance}' --unique-id \"$instance_id\"" in script
    )
    assert "instance_id=$(cat /var/lib/cloud/data/instance-id)\n" in script


def test_boot_signals_success_only_after_healthz_answers_and_failure_on_any_error(
    default: Synth,
) -> None:
    script = _user_data(default)
    start = script.index("systemctl enable --now logd.service")
    health = script.index("curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:6101/healthz")
    success = script.index("\nsignal SUCCESS\n")
    assert start < health < success
    assert script.count("signal SUCCESS") == 1
    # Any failing step (set -e) ends the script, and the EXIT trap reports it at once.
    trap = script.index("trap 'status=$?; if [ \"$status\" -ne 0 ]; then signal FAILURE; fi' EXIT")
    assert script.index("set -euo pipefail") < trap < script.index("retry dnf install")


def test_signal_reaches_cloudformation_through_its_endpoint_without_nat(default: Synth) -> None:
    instance, _ = default.one("AWS::EC2::Instance")
    (endpoint,) = [
        rid
        for rid, p in default.of_type("AWS::EC2::VPCEndpoint").items()
        if p["ServiceName"]["Fn::Join"][1][-1] == ".cloudformation"
    ]
    assert default.of_type("AWS::EC2::VPCEndpoint")[endpoint]["PrivateDnsEnabled"] is True
    assert endpoint in default.resources[instance]["DependsOn"]
    default.template.resource_count_is("AWS::EC2::NatGateway", 0)


def test_rotation_schedules_wait_for_the_signal(default: Synth) -> None:
    instance, _ = default.one("AWS::EC2::Instance")
    assert "CreationPolicy" in default.resources[instance]
    schedules = [
        r
        for r in default.resources.values()
        if r["Type"] == "AWS::SecretsManager::RotationSchedule"
    ]
    assert len(schedules) == 2
    for schedule in schedules:
        assert instance in schedule["DependsOn"]


# --- the availability zone -----------------------------------------------------------


def test_az_option_places_the_new_vpc_subnet(wheelhouse: Path, tmp_path: Path) -> None:
    app, stack = build_app(
        context=CONTEXT | {"az": "us-east-1b"},
        outdir=str(tmp_path),
        wheelhouse=wheelhouse,
        builtin_validation=False,
    )
    app.synth()
    synth = _load(stack, tmp_path)
    assert [s["AvailabilityZone"] for s in synth.of_type("AWS::EC2::Subnet").values()] == [
        "us-east-1b"
    ]


def test_az_option_picks_the_existing_vpcs_subnet_in_that_zone(
    wheelhouse: Path, lookup: dict[str, Any], tmp_path: Path
) -> None:
    app, stack = build_app(
        context=CONTEXT | lookup | {"vpc_id": EXISTING_VPC_ID, "az": "eu-west-1b"},
        outdir=str(tmp_path),
        wheelhouse=wheelhouse,
        environ=LOOKUP_ENV,
        builtin_validation=False,
    )
    app.synth()
    _, instance = _load(stack, tmp_path).one("AWS::EC2::Instance")
    assert instance["NetworkInterfaces"][0]["SubnetId"] == f"{PRIVATE}1"


def test_default_vpc_takes_the_regions_first_zone(default: Synth) -> None:
    (subnet,) = default.of_type("AWS::EC2::Subnet").values()
    assert subnet["AvailabilityZone"] == {"Fn::Select": [0, {"Fn::GetAZs": ""}]}
