"""The rotation Lambda for both logd secrets, and the alarm that says when a rotation failed.

It runs in the VPC so that its `testSecret` step can PING logd with the pending key,
and reaches Secrets Manager through the interface endpoint. Its role gets only its
log group and the network interfaces Lambda needs in a VPC; the rotation schedules
(in the stack) grant it the two secrets.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

# The repository's rotation_lambda/: only its top-level modules go into the asset.
CODE_DIR = Path(__file__).resolve().parents[2] / "rotation_lambda"
CODE_EXCLUDE = ["*", "!*.py", "test_*.py", "*_test.py", "conftest.py"]
RUNTIME = lambda_.Runtime.PYTHON_3_14
# testSecret waits up to LOGD_PING_TIMEOUT for a PONG; the function must outlive that.
PING_TIMEOUT_S = 60
FUNCTION_TIMEOUT = Duration.seconds(120)

# Lambda attaches a network interface per subnet and security group; these EC2 actions
# take no resource ARN (AWS's AWSLambdaVPCAccessExecutionRole grants the same on *).
VPC_ACCESS_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


class RotationFunction(Construct):
    """The function, its role, security group and log group, and a failure alarm."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        vpc_cidr: str,
        subnets: ec2.SubnetSelection,
        ping_target: str,
        code_dir: Path = CODE_DIR,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="logd rotation: its log group, VPC networking, the two secrets",
        )
        self.role.add_to_policy(iam.PolicyStatement(actions=VPC_ACCESS_ACTIONS, resources=["*"]))
        self.log_group.grant_write(self.role)
        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="Lambda's VPC network-interface actions support no resource-level scoping.",
            )
        )
        # Egress only to what rotation talks to; the PING rule is added by the stack.
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="logd rotation Lambda: Secrets Manager endpoint and the logd UDP port",
            allow_all_outbound=False,
        )
        self.security_group.add_egress_rule(
            ec2.Peer.ipv4(vpc_cidr),
            ec2.Port.tcp(443),
            "HTTPS to the Secrets Manager endpoint",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description="Rotates the logd read and write secrets (testSecret PINGs logd).",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(code_dir), exclude=CODE_EXCLUDE),
            timeout=FUNCTION_TIMEOUT,
            memory_size=256,
            role=self.role,
            log_group=self.log_group,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            environment={
                "LOGD_PING_TARGET": ping_target,
                "LOGD_PING_TIMEOUT": str(PING_TIMEOUT_S),
            },
        )
        # A failed step raises, so any error means a rotation did not complete.
        self.failure_alarm = cloudwatch.Alarm(
            self,
            "FailureAlarm",
            alarm_description=(
                "A logd secret rotation failed; AWSCURRENT is unchanged. "
                "See the rotation Lambda's log group."
            ),
            metric=self.function.metric_errors(
                period=Duration.minutes(5), statistic=cloudwatch.Stats.SUM
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
