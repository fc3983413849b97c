"""The `Logd` stack: network, two secrets, the host, the rotation Lambda, grants and outputs.

With context nodes=N above 1 the host is N nodes behind a load balancer, sharing Valkey.

Constructs build resources; this module wires them together and does every grant,
so the whole permission picture is in one place.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from aws_cdk import Aws, CfnOutput, Stack
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.components.host import HTTP_PORT, UDP_PORT, LogdHost
from infra.components.host_boot import STORE_PORT, BootValues
from infra.components.network import LogdNetwork
from infra.components.nodes import LogdNodes
from infra.components.readiness import signal_statement
from infra.components.rotation import CODE_DIR, RotationFunction
from infra.components.valkey import LogdValkey
from infra.settings import DeploySettings

# Long, and only letters and digits: safe in a shell, a header and a URL.
SECRET_LENGTH = 64
# What the rotation steps call (rotation_lambda/handler.py), on the two secrets only.
ROTATION_ACTIONS = [
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
]
# dnf on AL2023 reads its repositories from this AWS-owned bucket, through the S3 endpoint.
AL2023_REPO_OBJECTS = f"arn:{Aws.PARTITION}:s3:::al2023-repos-{Aws.REGION}-de612dc2/*"


class LogdStack(Stack):
    """Everything `cdk deploy` creates for one logd."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploySettings,
        wheelhouse: Path,
        rotation_code: Path = CODE_DIR,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.host_layout = settings.nodes == 1
        network = LogdNetwork(
            self,
            "Network",
            vpc_id=settings.vpc_id,
            vpc_cidr=settings.vpc_cidr,
            create_endpoints=settings.create_endpoints,
            az=settings.az,
        )
        self.read_secret = self._secret("ReadSecret", "read: HTTP queries and tails")
        self.write_secret = self._secret("WriteSecret", "write: signed UDP frames")
        wheelhouse_asset = s3_assets.Asset(self, "Wheelhouse", path=str(wheelhouse))

        boot = BootValues(
            region=Aws.REGION,
            wheelhouse_url=wheelhouse_asset.s3_object_url,
            read_secret_id=self.read_secret.secret_arn,
            write_secret_id=self.write_secret.secret_arn,
            udp_port=UDP_PORT,
            http_port=HTTP_PORT,
            stack_name=Aws.STACK_NAME,
            signal_resource="",  # each construct names the resource that waits for it
        )
        allowed = _allowed_peers(settings, network.cidr)
        if settings.nodes == 1:
            self.host = LogdHost(
                self,
                "Host",
                vpc=network.vpc,
                subnets=network.subnets,
                instance_type=settings.instance_type,
                allowed=allowed,
                boot=boot,
            )
            role, runs = self.host.role, self.host.instance
            # The rotation Lambda's testSecret PING goes to the instance itself.
            ping_group, ping_address = self.host.security_group, runs.instance_private_ip
        else:
            role, runs, ping_group, ping_address = self._nodes(network, settings, allowed, boot)
        # First boot installs through the endpoints: they must exist before logd's hosts.
        runs.node.add_dependency(network)
        self.rotation = RotationFunction(
            self,
            "Rotation",
            vpc=network.vpc,
            vpc_cidr=network.cidr,
            subnets=network.subnets,
            ping_target=f"{ping_address}:{UDP_PORT}",
            code_dir=rotation_code,
        )

        # Grants: the hosts read their two secrets and their one wheelhouse object, and
        # signal this stack that they came up.
        for secret in (self.read_secret, self.write_secret):
            secret.grant_read(role)
        role.add_to_principal_policy(signal_statement())
        wheelhouse_object = wheelhouse_asset.bucket.arn_for_objects(wheelhouse_asset.s3_object_key)
        role.add_to_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[wheelhouse_object])
        )
        network.allow_s3_reads(wheelhouse_object, AL2023_REPO_OBJECTS)
        if settings.alerts_sns_topic_arn:
            # Alert notices to SNS: that one topic, through an endpoint (there is no NAT).
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["sns:Publish"], resources=[settings.alerts_sns_topic_arn]
                )
            )
            network.add_sns_endpoint()
        # The rotation Lambda's testSecret PING; replies come back on the same flow.
        self.rotation.function.connections.allow_to(
            ping_group, ec2.Port.udp(UDP_PORT), "testSecret PING to logd"
        )
        # Rotation, wired by hand rather than with Secret.add_rotation_schedule: that one
        # adds secretsmanager:GetRandomPassword on * (the handler makes its own values) and
        # an invoke permission open to every account's Secrets Manager.
        function = self.rotation.function
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=ROTATION_ACTIONS,
                resources=[self.read_secret.secret_arn, self.write_secret.secret_arn],
            )
        )
        for name, secret in (("Read", self.read_secret), ("Write", self.write_secret)):
            function.add_permission(
                f"{name}SecretInvoke",
                principal=iam.ServicePrincipal("secretsmanager.amazonaws.com"),
                source_account=Aws.ACCOUNT_ID,
                source_arn=secret.secret_arn,
            )
            schedule = secretsmanager.CfnRotationSchedule(
                self,
                f"{name}Rotation",
                secret_id=secret.secret_arn,
                rotation_lambda_arn=function.function_arn,
                rotation_rules=secretsmanager.CfnRotationSchedule.RotationRulesProperty(
                    automatically_after_days=settings.rotation_days
                ),
                # No rotation at deploy: Secrets Manager only tests the configuration (it runs
                # testSecret on a copy of the current value, which logd already knows).
                rotate_immediately_on_update=False,
            )
            # logd must be up (and the Lambda allowed in) before any rotation can run: `runs`
            # is created only once its hosts signalled that logd answers (readiness.py).
            # The schedule's creation runs the handler's testSecret at once, against logd.
            schedule.node.add_dependency(runs, function.node.find_child(f"{name}SecretInvoke"))
        if settings.alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", settings.alarm_topic_arn)
            self.rotation.failure_alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))

        if settings.nodes == 1:
            self._outputs(self.host.instance)
        else:
            self._nodes_outputs()

    def _nodes(
        self,
        network: LogdNetwork,
        settings: DeploySettings,
        allowed: list[tuple[ec2.IPeer, str]],
        boot: BootValues,
    ) -> tuple[iam.IRole, Construct, ec2.ISecurityGroup, str]:
        """Valkey and N nodes behind the load balancer: (role, group, PING group and address)."""
        self.valkey = LogdValkey(self, "Valkey", vpc=network.vpc, subnets=network.subnets)
        self.nodes = LogdNodes(
            self,
            "Nodes",
            vpc=network.vpc,
            subnets=network.subnets,
            instance_type=settings.instance_type,
            nodes=settings.nodes,
            allowed=allowed,
            boot=replace(
                boot,
                store_host=self.valkey.primary_endpoint,
                store_secret_id=self.valkey.auth_token.secret_arn,
            ),
        )
        self.valkey.security_group.connections.allow_from(
            self.nodes.security_group, ec2.Port.tcp(STORE_PORT), "Valkey from the logd nodes"
        )
        self.valkey.auth_token.grant_read(self.nodes.role)
        # Nodes start only when the store they connect to exists.
        self.nodes.group.node.add_dependency(self.valkey.group)
        return (
            self.nodes.role,
            self.nodes.group,
            self.nodes.lb_security_group,
            self.nodes.load_balancer.load_balancer_dns_name,
        )

    def _nodes_outputs(self) -> None:
        dns = self.nodes.load_balancer.load_balancer_dns_name
        self._emit_outputs(
            dns,
            {
                # A node that sends to the load balancer may be handed its own address back
                # (NLB hairpinning, which times out); every node reads the shared store, so
                # on a node the local port gives the same answer.
                "NodeCurlCommand": (
                    self._curl_command("127.0.0.1"),
                    "The 20 newest events, from a shell on a logd node (Session Manager)",
                ),
                "LoadBalancerDns": (dns, f"Writers send UDP to this name, port {UDP_PORT}"),
                "AutoScalingGroup": (
                    self.nodes.group.auto_scaling_group_name,
                    "The logd nodes (Session Manager: pick one of its instances)",
                ),
                "ValkeyEndpoint": (self.valkey.primary_endpoint, "The store's primary (TLS, AUTH)"),
                "StoreSecretArn": (self.valkey.auth_token.secret_arn, "Valkey auth token"),
            },
        )

    def _secret(self, construct_id: str, role: str) -> secretsmanager.Secret:
        return secretsmanager.Secret(
            self,
            construct_id,
            description=f"logd {role}; rotated by the logd rotation Lambda",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=SECRET_LENGTH, exclude_punctuation=True, include_space=False
            ),
        )

    def _outputs(self, instance: ec2.Instance) -> None:
        ip = instance.instance_private_ip
        self._emit_outputs(
            ip,
            {
                "InstanceId": (instance.instance_id, "The logd instance"),
                "PrivateIp": (ip, f"Writers send UDP to this address, port {UDP_PORT}"),
                "SessionCommand": (
                    f"aws ssm start-session --region {Aws.REGION} --target {instance.instance_id}",
                    "A shell on the host (journalctl -u logd -f)",
                ),
                "PortForwardCommand": (
                    f"aws ssm start-session --region {Aws.REGION} --target {instance.instance_id} "
                    "--document-name AWS-StartPortForwardingSession "
                    f"--parameters portNumber={HTTP_PORT},localPortNumber={HTTP_PORT}",
                    f"Reads from your machine on http://127.0.0.1:{HTTP_PORT}",
                ),
            },
        )

    def _curl_command(self, host: str) -> str:
        read_value = (
            f"aws secretsmanager get-secret-value --region {Aws.REGION} "
            f"--secret-id {self.read_secret.secret_arn} --query SecretString --output text"
        )
        return f'curl -H "Authorization: $({read_value})" "http://{host}:{HTTP_PORT}/?limit=20"'

    def _emit_outputs(self, host: str, outputs: dict[str, tuple[str, str]]) -> None:
        """The outputs of either layout: its own, plus the secrets, curl line and alarm."""
        where = "a host in the VPC" if self.host_layout else "a host in the VPC, not a logd node"
        outputs |= {
            "ReadSecretArn": (self.read_secret.secret_arn, "Read secret (HTTP queries)"),
            "WriteSecretArn": (self.write_secret.secret_arn, "Write secret (UDP frames)"),
            "CurlCommand": (self._curl_command(host), f"The 20 newest events, from {where}"),
            "RotationAlarm": (
                self.rotation.failure_alarm.alarm_name,
                "In ALARM: a rotation failed",
            ),
        }
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)


def _allowed_peers(settings: DeploySettings, vpc_cidr: str) -> list[tuple[ec2.IPeer, str]]:
    """The configured networks, else the VPC's own range; never the whole internet."""
    peers: list[tuple[ec2.IPeer, str]] = [
        (ec2.Peer.ipv4(cidr), cidr) for cidr in settings.allowed_cidrs
    ]
    if settings.allowed_prefix_list:
        peers.append(
            (ec2.Peer.prefix_list(settings.allowed_prefix_list), settings.allowed_prefix_list)
        )
    return peers or [(ec2.Peer.ipv4(vpc_cidr), "the VPC")]
