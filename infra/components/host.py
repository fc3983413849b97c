"""The logd host: one Graviton Amazon Linux 2023 instance in a private subnet.

No SSH key and no port 22: operators come in through Session Manager. Only logd's
two ports are open, and only to the allowed networks. The stack grants the role
what it reads (the two secrets, the wheelhouse object).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.components.host_boot import BootValues, render_user_data
from infra.components.readiness import LogicalIdOf, wait_for_signal

UDP_PORT = 6102
HTTP_PORT = 6101
# Resolved when the instance launches, so a new AL2023 release does not replace it.
AL2023_ARM64_AMI = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
ROOT_VOLUME_GIB = 8

# What the SSM agent needs for Session Manager (AWS's documented minimum, plus the
# ec2messages channel the agent polls); none of these actions takes a resource ARN.
SESSION_MANAGER_ACTIONS = [
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
]


def logd_ingress_group(
    scope: Construct,
    construct_id: str,
    *,
    vpc: ec2.IVpc,
    description: str,
    allowed: Sequence[tuple[ec2.IPeer, str]],
) -> ec2.SecurityGroup:
    """A security group open on logd's two ports to the allowed networks only."""
    group = ec2.SecurityGroup(
        scope, construct_id, vpc=vpc, description=description, allow_all_outbound=False
    )
    for peer, name in allowed:
        group.add_ingress_rule(peer, ec2.Port.udp(UDP_PORT), f"logd signed frames from {name}")
        group.add_ingress_rule(peer, ec2.Port.tcp(HTTP_PORT), f"logd HTTP reads from {name}")
    return group


def allow_https_out(group: ec2.SecurityGroup) -> None:
    """The only way out of a logd host: with no NAT or internet gateway, HTTPS can only reach
    the VPC endpoints and S3 (whose gateway endpoint needs S3's public ranges)."""
    group.add_egress_rule(
        ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to the VPC endpoints and S3"
    )


def session_manager_role(scope: Construct, construct_id: str, *, description: str) -> iam.Role:
    """An EC2 role with what Session Manager's agent needs; the stack grants the rest."""
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
        description=description,
    )
    role.add_to_policy(iam.PolicyStatement(actions=SESSION_MANAGER_ACTIONS, resources=["*"]))
    Validations.of(role).acknowledge(
        Acknowledgment(
            id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
            reason="Session Manager's agent actions support no resource-level scoping.",
        )
    )
    return role


def encrypted_root_volume() -> list[ec2.BlockDevice]:
    return [
        ec2.BlockDevice(
            device_name="/dev/xvda",
            volume=ec2.BlockDeviceVolume.ebs(
                ROOT_VOLUME_GIB, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3
            ),
        )
    ]


class LogdHost(Construct):
    """The instance, its security group and its role."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        instance_type: str,
        allowed: Sequence[tuple[ec2.IPeer, str]],
        boot: BootValues,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = logd_ingress_group(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="logd: UDP writes and HTTP reads from the allowed networks only",
            allowed=allowed,
        )
        allow_https_out(self.security_group)

        self.role = session_manager_role(
            self, "Role", description="logd host: Session Manager, its two secrets, its wheelhouse"
        )

        # The boot signals the instance itself; CloudFormation waits for it (readiness.py).
        waits = LogicalIdOf()
        boot = replace(boot, signal_resource=waits.token())
        self.instance = ec2.Instance(
            self,
            "Instance",
            vpc=vpc,
            vpc_subnets=subnets,
            instance_type=ec2.InstanceType(instance_type),
            machine_image=ec2.MachineImage.resolve_ssm_parameter_at_launch(
                AL2023_ARM64_AMI, os=ec2.OperatingSystemType.LINUX
            ),
            security_group=self.security_group,
            role=self.role,
            associate_public_ip_address=False,
            http_endpoint=True,
            http_tokens=ec2.HttpTokens.REQUIRED,
            http_put_response_hop_limit=1,
            block_devices=encrypted_root_volume(),
            user_data=ec2.UserData.custom(render_user_data(boot)),
            # The script runs at first boot only: a new wheelhouse needs a new instance.
            user_data_causes_replacement=True,
        )
        waits.element = self.instance.instance
        wait_for_signal(self.instance.instance)
        # cfn-lint, like CDK's own check acknowledged below, wants an ami-... id there.
        self.instance.instance.add_metadata("cfn-lint", {"config": {"ignore_checks": ["E1152"]}})
        Validations.of(self.instance).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-EC28",
                reason="Basic 5-minute metrics suffice for one host; logd serves its own /metrics.",
            ),
            Acknowledgment(
                id="CloudFormation-Validate::E1152",
                reason="ImageId resolve:ssm: is valid EC2 syntax (the AMI is resolved at launch).",
            ),
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-EC29",
                reason="The instance is replaced on each new wheelhouse; termination "
                "protection would block that deploy.",
            ),
        )
