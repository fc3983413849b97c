"""The several-node deployment (`-c nodes=2`): Valkey, the Auto Scaling group behind an
internal Network Load Balancer, the chained security groups and what the nodes boot with.

Synthesized once per session with cdk-nag on (CDK's own CloudFormation check is left to
the default synth in test_infra.py; cfn-lint covers this template). Assertions name
resources by their properties, never by logical id.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_infra import (
    CONTEXT,
    VPC_CIDR,
    WHEELHOUSE_OBJECT,
    Synth,
    _as_list,
    _ingress,
    _join,
    _load,
    _ref_id,
    _statements,
    assert_cfn_lint_clean,
)

from infra.app import build_app
from infra.components.host import SESSION_MANAGER_ACTIONS
from infra.components.host_boot import (
    BootValues,
    render_store_password,
    render_unit,
    render_user_data,
)
from infra.settings import DeploySettings, SettingsError

# The session's one nodes=2 synth (2 s alone, under 1 s after test_infra.py's) runs first.
pytestmark = pytest.mark.timeout(300)

NODES = 2
STORE_FILE = "/etc/logd/store.env"
STORE_BOOT = BootValues(
    region="eu-west-1",
    wheelhouse_url="s3://bucket/wheelhouse.zip",
    read_secret_id="arn:aws:secretsmanager:eu-west-1:111111111111:secret:r",
    write_secret_id="arn:aws:secretsmanager:eu-west-1:111111111111:secret:w",
    udp_port=6102,
    http_port=6101,
    stack_name="Logd",
    signal_resource="NodesGroupASG0123ABCD",
    store_host="master.logd.abc123.euw1.cache.amazonaws.com",
    store_secret_id="arn:aws:secretsmanager:eu-west-1:111111111111:secret:t",
)


@pytest.fixture(scope="session")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Two nodes in the default new VPC; app.synth() raises if cdk-nag finds anything."""
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    (wheelhouse / "logd-0.0.0-py3-none-any.whl").write_bytes(b"stand-in")
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(
        context=CONTEXT | {"nodes": str(NODES)},
        outdir=str(outdir),
        wheelhouse=wheelhouse,
        builtin_validation=False,
    )
    app.synth()
    return _load(stack, outdir)


def _group(synth: Synth, description: str) -> str:
    group, _ = synth.one("AWS::EC2::SecurityGroup", GroupDescription=description)
    return group


def _user_data(synth: Synth) -> str:
    _, template = synth.one("AWS::EC2::LaunchTemplate")
    return _join(template["LaunchTemplateData"]["UserData"]["Fn::Base64"])


# --- Valkey --------------------------------------------------------------------------


def test_valkey_encrypts_in_transit_and_at_rest_and_requires_the_generated_token(
    nodes: Synth,
) -> None:
    _, group = nodes.one("AWS::ElastiCache::ReplicationGroup")
    token, secret = nodes.one("AWS::SecretsManager::Secret", Description="logd Valkey")
    assert group["Engine"] == "valkey"
    assert group["TransitEncryptionEnabled"] is True
    assert group["AtRestEncryptionEnabled"] is True
    assert group["Port"] == 6379
    assert group["NumCacheClusters"] >= 2
    assert group["AutomaticFailoverEnabled"] is True
    # A dynamic reference resolved by CloudFormation: the token is never in the template.
    assert (
        _join(group["AuthToken"]) == f"{{{{resolve:secretsmanager:{{{token}}}:SecretString:::}}}}"
    )
    generated = secret["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32
    assert generated["ExcludePunctuation"] is True
    subnet_group, subnets = nodes.one("AWS::ElastiCache::SubnetGroup")
    assert group["CacheSubnetGroupName"] == {"Ref": subnet_group}
    assert subnets["SubnetIds"]


# --- security groups -----------------------------------------------------------------


def test_security_groups_chain_clients_to_balancer_to_nodes_to_valkey(nodes: Synth) -> None:
    balancer = _group(nodes, "logd load balancer")
    node = _group(nodes, "logd nodes")
    valkey = _group(nodes, "logd Valkey")
    rotation = _group(nodes, "logd rotation")
    assert _ingress(nodes, balancer) == {
        ("udp", 6102, 6102, VPC_CIDR),
        ("tcp", 6101, 6101, VPC_CIDR),
        ("udp", 6102, 6102, rotation),
    }
    assert _ingress(nodes, node) == {("udp", 6102, 6102, balancer), ("tcp", 6101, 6101, balancer)}
    assert _ingress(nodes, valkey) == {("tcp", 6379, 6379, node)}
    _, load_balancer = nodes.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert [_ref_id(g) for g in load_balancer["SecurityGroups"]] == [balancer]
    _, group = nodes.one("AWS::ElastiCache::ReplicationGroup")
    assert [_ref_id(g) for g in group["SecurityGroupIds"]] == [valkey]


def test_no_ingress_from_anywhere(nodes: Synth) -> None:
    for group in nodes.of_type("AWS::EC2::SecurityGroup"):
        assert all(source != "0.0.0.0/0" for *_, source in _ingress(nodes, group))


# --- nodes and load balancer ---------------------------------------------------------


def test_group_keeps_n_nodes_replaced_on_failed_load_balancer_health_checks(
    nodes: Synth,
) -> None:
    group_id, group = nodes.one("AWS::AutoScaling::AutoScalingGroup")
    assert (group["MinSize"], group["MaxSize"]) == (str(NODES), str(NODES))
    assert group["HealthCheckType"] == "ELB"
    assert set(map(_ref_id, group["TargetGroupARNs"])) == set(
        nodes.of_type("AWS::ElasticLoadBalancingV2::TargetGroup")
    )
    rolling = nodes.resources[group_id]["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["MaxBatchSize"] == 1
    assert rolling["MinInstancesInService"] == NODES - 1
    # Nodes start after the store and the endpoints they install through.
    (valkey,) = nodes.of_type("AWS::ElastiCache::ReplicationGroup")
    endpoints = set(nodes.of_type("AWS::EC2::VPCEndpoint"))
    assert {valkey, *endpoints} <= set(nodes.resources[group_id]["DependsOn"])
    assert nodes.of_type("AWS::EC2::Instance") == {}


def test_nodes_are_graviton_al2023_imdsv2_encrypted_without_key_or_public_ip(
    nodes: Synth,
) -> None:
    _, template = nodes.one("AWS::EC2::LaunchTemplate")
    data = template["LaunchTemplateData"]
    assert data["ImageId"].startswith("resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023")
    assert data["ImageId"].endswith("arm64")
    assert data["InstanceType"] == "t4g.small"
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (device,) = data["BlockDeviceMappings"]
    assert device["Ebs"]["Encrypted"] is True
    assert "KeyName" not in data
    assert all(i.get("AssociatePublicIpAddress") is False for i in data["NetworkInterfaces"])


def test_internal_balancer_forwards_udp_and_tcp_with_healthz_checks(nodes: Synth) -> None:
    _, load_balancer = nodes.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert load_balancer["Type"] == "network"
    assert load_balancer["Scheme"] == "internal"
    listeners = {
        (p["Protocol"], p["Port"]): _ref_id(p["DefaultActions"][0]["TargetGroupArn"])
        for p in nodes.of_type("AWS::ElasticLoadBalancingV2::Listener").values()
    }
    assert set(listeners) == {("UDP", 6102), ("TCP", 6101)}
    targets = nodes.of_type("AWS::ElasticLoadBalancingV2::TargetGroup")
    for (protocol, port), target in listeners.items():
        props = targets[target]
        assert (props["Protocol"], props["Port"]) == (protocol, port)
        assert props["HealthCheckProtocol"] == "HTTP"
        assert (props["HealthCheckPort"], props["HealthCheckPath"]) == ("6101", "/healthz")


def test_rotation_lambda_pings_through_the_balancer(nodes: Synth) -> None:
    balancer, _ = nodes.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    _, function = nodes.one("AWS::Lambda::Function", Handler="handler.handler")
    env = function["Environment"]["Variables"]
    assert _join(env["LOGD_PING_TARGET"]) == f"{{{balancer}.DNSName}}:6102"
    group, _ = nodes.one("AWS::AutoScaling::AutoScalingGroup")
    for schedule in nodes.resources.values():
        if schedule["Type"] == "AWS::SecretsManager::RotationSchedule":
            assert group in schedule["DependsOn"]


# --- what the nodes boot with --------------------------------------------------------


def test_unit_uses_valkey_over_tls_and_no_data_dir(nodes: Synth) -> None:
    valkey, _ = nodes.one("AWS::ElastiCache::ReplicationGroup")
    script = _user_data(nodes)
    url = f"rediss://{{{valkey}.PrimaryEndPoint.Address}}:6379/0"
    assert f"\nEnvironment=LOGD_STORE_URL={url}\n" in script
    assert f"\nEnvironmentFile={STORE_FILE}\n" in script
    assert "LOGD_DATA_DIR" not in script
    assert "resolve:secretsmanager" not in script


def test_token_is_fetched_at_boot_into_a_root_only_file(nodes: Synth) -> None:
    token, _ = nodes.one("AWS::SecretsManager::Secret", Description="logd Valkey")
    script = _user_data(nodes)
    assert f"--secret-id '{{{token}}}' --query SecretString --output text)" in script
    assert (
        f"(umask 077 && printf 'LOGD_STORE_PASSWORD=%s\\n' \"$store_password\" >{STORE_FILE})"
        in script
    )
    # Written before the unit starts; the value is never echoed nor on a command line.
    assert script.index(STORE_FILE + ")") < script.index("systemctl enable --now logd")
    assert "set -x" not in script


def test_boot_step_writes_the_token_readable_by_root_only_and_prints_nothing(
    tmp_path: Path,
) -> None:
    """The step itself, run by bash with a stand-in `aws` that prints a token."""
    token = "tok3n" * 12
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(f"#!/bin/sh\necho {token}\n")
    (bin_dir / "aws").chmod(0o755)
    env_file = tmp_path / "etc/logd/store.env"
    step = render_store_password(STORE_BOOT, env_file=str(env_file))
    result = subprocess.run(
        ["bash", "-c", 'set -euo pipefail\nretry() { "$@"; }\n' + step],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    assert env_file.read_text() == f"LOGD_STORE_PASSWORD={token}\n"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert env_file.parent.stat().st_mode & 0o777 == 0o700


def test_nodes_role_reads_its_three_secrets_and_its_wheelhouse_only(nodes: Synth) -> None:
    secrets = sorted(f"{{{s}}}" for s in nodes.of_type("AWS::SecretsManager::Secret"))
    assert len(secrets) == 3
    granted: dict[frozenset[str], list[str]] = {}
    for statement in _statements(nodes, "logd nodes"):
        actions = frozenset(_as_list(statement["Action"]))
        granted.setdefault(actions, []).extend(map(_join, _as_list(statement["Resource"])))
    read = frozenset({"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"})
    session = frozenset(SESSION_MANAGER_ACTIONS)
    signal = frozenset({"cloudformation:SignalResource"})
    assert set(granted) == {session, read, signal, frozenset({"s3:GetObject"})}
    assert granted[session] == ["*"]
    assert sorted(granted[read]) == secrets
    assert granted[signal] == ["{AWS::StackId}"]
    (wheelhouse,) = granted[frozenset({"s3:GetObject"})]
    assert re.fullmatch(WHEELHOUSE_OBJECT, wheelhouse)


def test_rendered_boot_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n"],
        input=render_user_data(STORE_BOOT),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    unit = render_unit(STORE_BOOT)
    assert "StateDirectory=logd" in unit
    assert "LOGD_DATA_DIR" not in unit


# --- outputs and checks --------------------------------------------------------------


def test_outputs_name_the_balancer_and_the_store(nodes: Synth) -> None:
    balancer, _ = nodes.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    outputs: dict[str, Any] = nodes.template.to_json()["Outputs"]
    values = {_join(o["Value"]) for o in outputs.values()}
    assert f"{{{balancer}.DNSName}}" in values
    curl = _join(outputs["CurlCommand"]["Value"])
    assert f"http://{{{balancer}.DNSName}}:6101/" in curl
    assert not any("PrivateIp" in v for v in values)


ACKNOWLEDGED = {
    ("Logd/Nodes/Role/DefaultPolicy/Resource", "AwsSolutions::AwsSolutions-IAM5[Resource::*]"),
    ("Logd/Rotation/Role/DefaultPolicy/Resource", "AwsSolutions::AwsSolutions-IAM5[Resource::*]"),
    ("Logd/Nodes/Group/ASG", "AwsSolutions::AwsSolutions-AS3"),
    ("Logd/Nodes/LoadBalancer/Resource", "AwsSolutions::AwsSolutions-ELB2"),
    ("Logd/Valkey/ReplicationGroup", "AwsSolutions::AwsSolutions-AEC4"),
    ("Logd/Valkey/AuthToken/Resource", "AwsSolutions::AwsSolutions-SMG4"),
}


def test_cdk_nag_passes_with_only_known_acknowledgments(nodes: Synth) -> None:
    report = json.loads((nodes.outdir / "validation-report.json").read_text())
    (plugin,) = report["pluginReports"]
    assert plugin["pluginName"] == "AwsSolutions"
    assert plugin["conclusion"] == "success"
    assert plugin["violations"] == []
    acknowledged = set()
    for finding in plugin["suppressedViolations"]:
        assert len(finding["reason"]) >= 30
        assert "\n" not in finding["reason"]
        (construct,) = finding["violatingConstructs"]
        acknowledged.add((construct["constructPath"], finding["acknowledgedId"]))
    assert acknowledged == ACKNOWLEDGED


def test_cfn_lint_finds_no_errors(nodes: Synth) -> None:
    assert_cfn_lint_clean(nodes)


# --- the context option --------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), ("3", 3), (2, 2), ("20", 20)])
def test_nodes_option_defaults_to_one(value: object, expected: int) -> None:
    context = {"nodes": value}
    assert DeploySettings.from_context(context.get).nodes == expected


@pytest.mark.parametrize("value", ["0", "-1", "21", "two", "1.5"])
def test_nodes_option_rejects_other_values_in_one_sentence(value: str) -> None:
    context = {"nodes": value}
    with pytest.raises(SettingsError, match=r"^context nodes must be a whole number from 1 to 20"):
        DeploySettings.from_context(context.get)


# --- readiness -----------------------------------------------------------------------


def test_group_is_created_when_every_node_signalled(nodes: Synth) -> None:
    group_id, _ = nodes.one("AWS::AutoScaling::AutoScalingGroup")
    signal = nodes.resources[group_id]["CreationPolicy"]["ResourceSignal"]
    assert signal["Count"] == NODES
    script = _user_data(nodes)
    assert f"--logical-resource-id '{group_id}' --unique-id \"$instance_id\"" in script
    assert script.index("http://127.0.0.1:6101/healthz") < script.index("\nsignal SUCCESS\n")


def test_rolling_update_waits_for_each_new_nodes_signal(nodes: Synth) -> None:
    group_id, _ = nodes.one("AWS::AutoScaling::AutoScalingGroup")
    rolling = nodes.resources[group_id]["UpdatePolicy"]["AutoScalingRollingUpdate"]
    timeout = nodes.resources[group_id]["CreationPolicy"]["ResourceSignal"]["Timeout"]
    assert rolling["WaitOnResourceSignals"] is True
    assert rolling["PauseTime"] == timeout  # how long one node has to come up
    assert (rolling["MaxBatchSize"], rolling["MinInstancesInService"]) == (1, NODES - 1)
    # Health-check replacements would fight the update: suspended while it runs.
    assert {"HealthCheck", "ReplaceUnhealthy"} <= set(rolling["SuspendProcesses"])


def test_node_output_reads_from_the_node_itself(nodes: Synth) -> None:
    outputs: dict[str, Any] = nodes.template.to_json()["Outputs"]
    node_curl = _join(outputs["NodeCurlCommand"]["Value"])
    assert node_curl.endswith('"http://127.0.0.1:6101/?limit=20"')
    assert "logd node" in outputs["NodeCurlCommand"]["Description"]
    assert "not a logd node" in outputs["CurlCommand"]["Description"]
