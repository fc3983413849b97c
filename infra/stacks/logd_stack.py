"""The `Logd` stack: network, two secrets, the host, the rotation Lambda, grants and outputs.

Constructs build resources; this module wires them together and does every grant,
so the whole permission picture is in one place.
"""

from __future__ import annotations

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
from infra.components.host_boot import BootValues
from infra.components.network import LogdNetwork
from infra.components.rotation import CODE_DIR, RotationFunction
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
        network = LogdNetwork(
            self,
            "Network",
            vpc_id=settings.vpc_id,
            vpc_cidr=settings.vpc_cidr,
            create_endpoints=settings.create_endpoints,
        )
        self.read_secret = self._secret("ReadSecret", "read: HTTP queries and tails")
        self.write_secret = self._secret("WriteSecret", "write: signed UDP frames")
        wheelhouse_asset = s3_assets.Asset(self, "Wheelhouse", path=str(wheelhouse))

        self.host = LogdHost(
            self,
            "Host",
            vpc=network.vpc,
            subnets=network.subnets,
            instance_type=settings.instance_type,
            allowed=_allowed_peers(settings, network.cidr),
            boot=BootValues(
                region=Aws.REGION,
                wheelhouse_url=wheelhouse_asset.s3_object_url,
                read_secret_id=self.read_secret.secret_arn,
                write_secret_id=self.write_secret.secret_arn,
                udp_port=UDP_PORT,
                http_port=HTTP_PORT,
            ),
        )
        instance = self.host.instance
        # First boot installs through the endpoints: they must exist before the instance.
        instance.node.add_dependency(network)
        self.rotation = RotationFunction(
            self,
            "Rotation",
            vpc=network.vpc,
            vpc_cidr=network.cidr,
            subnets=network.subnets,
            ping_target=f"{instance.instance_private_ip}:{UDP_PORT}",
            code_dir=rotation_code,
        )

        # Grants: the host reads its two secrets and its one wheelhouse object.
        for secret in (self.read_secret, self.write_secret):
            secret.grant_read(self.host.role)
        wheelhouse_object = wheelhouse_asset.bucket.arn_for_objects(wheelhouse_asset.s3_object_key)
        self.host.role.add_to_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[wheelhouse_object])
        )
        network.allow_s3_reads(wheelhouse_object, AL2023_REPO_OBJECTS)
        # The rotation Lambda's testSecret PING; replies come back on the same flow.
        self.rotation.function.connections.allow_to(
            self.host.security_group, ec2.Port.udp(UDP_PORT), "testSecret PING to logd"
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
                # The values are fresh at creation; rotating then would race logd's first boot.
                rotate_immediately_on_update=False,
            )
            # logd must be up (and the Lambda allowed in) before any rotation can run.
            schedule.node.add_dependency(instance, function.node.find_child(f"{name}SecretInvoke"))
        if settings.alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", settings.alarm_topic_arn)
            self.rotation.failure_alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))

        self._outputs(instance)

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
        read_value = (
            f"aws secretsmanager get-secret-value --region {Aws.REGION} "
            f"--secret-id {self.read_secret.secret_arn} --query SecretString --output text"
        )
        outputs = {
            "InstanceId": (instance.instance_id, "The logd instance"),
            "PrivateIp": (ip, f"Writers send UDP to this address, port {UDP_PORT}"),
            "ReadSecretArn": (self.read_secret.secret_arn, "Read secret (HTTP queries)"),
            "WriteSecretArn": (self.write_secret.secret_arn, "Write secret (UDP frames)"),
            "CurlCommand": (
                f'curl -H "Authorization: $({read_value})" "http://{ip}:{HTTP_PORT}/?limit=20"',
                "The 20 newest events, from a host in the VPC",
            ),
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
