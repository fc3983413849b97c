"""Where logd runs: a new isolated VPC or an existing one, and the endpoints that replace a NAT.

The default VPC has one isolated subnet in one AZ: a single instance lives in one AZ
anyway, and every interface endpoint is billed per AZ. Nothing in it can reach the
internet; the host and the rotation Lambda reach AWS through private endpoints only.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

# Secrets Manager for logd and the rotation Lambda; CloudFormation for the hosts' readiness
# signal (readiness.py); the three SSM ones for Session Manager.
INTERFACE_ENDPOINTS = {
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "CloudFormation": ec2.InterfaceVpcEndpointAwsService.CLOUDFORMATION,
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SsmMessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
    "Ec2Messages": ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
}


class LogdNetwork(Construct):
    """The VPC, the subnets logd uses, and (optionally) its private endpoints."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc_id: str | None,
        vpc_cidr: str,
        create_endpoints: bool,
        az: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._own_vpc = not vpc_id
        if vpc_id:
            self.vpc: ec2.IVpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=vpc_id)
        else:
            vpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr(vpc_cidr),
                # One AZ: the chosen one (where the instance type is offered), else the first.
                **({"availability_zones": [az]} if az else {"max_azs": 1}),
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(
                        name="logd", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                    )
                ],
            )
            # Rejected flows only: who knocks on closed ports, at a fraction of a full log's cost.
            vpc.add_flow_log(
                "RejectedFlows",
                traffic_type=ec2.FlowLogTrafficType.REJECT,
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                    logs.LogGroup(
                        self,
                        "RejectedFlowLogs",
                        retention=logs.RetentionDays.THREE_MONTHS,
                        removal_policy=RemovalPolicy.DESTROY,
                    )
                ),
            )
            self.vpc = vpc
        # A literal range (a lookup returns one too), so rules stay checkable at synth time.
        self.cidr: str = vpc_cidr if not vpc_id else self.vpc.vpc_cidr_block
        # Isolated subnets when the VPC has them, else private ones; never public.
        subnet_type = (
            ec2.SubnetType.PRIVATE_ISOLATED
            if self.vpc.isolated_subnets
            else ec2.SubnetType.PRIVATE_WITH_EGRESS
        )
        self.subnets = ec2.SubnetSelection(
            subnet_type=subnet_type, availability_zones=[az] if az else None
        )
        self.s3_endpoint: ec2.GatewayVpcEndpoint | None = None
        self._create_endpoints = create_endpoints
        if create_endpoints:
            self.s3_endpoint = self.vpc.add_gateway_endpoint(
                "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets]
            )
            for name, service in INTERFACE_ENDPOINTS.items():
                self._interface_endpoint(name, service)

    def _interface_endpoint(self, name: str, service: ec2.IInterfaceVpcEndpointService) -> None:
        endpoint = self.vpc.add_interface_endpoint(
            name, service=service, subnets=self.subnets, private_dns_enabled=True, open=False
        )
        endpoint.connections.allow_default_port_from(ec2.Peer.ipv4(self.cidr), "HTTPS from the VPC")

    def add_sns_endpoint(self) -> None:
        """SNS for alert notices (the host has no NAT), unless the VPC brings its own."""
        if self._create_endpoints:
            self._interface_endpoint("Sns", ec2.InterfaceVpcEndpointAwsService.SNS)

    def allow_s3_reads(self, *object_arns: str) -> None:
        """Limit the S3 endpoint to reading these objects. Only in a VPC of our own: in an
        existing one the endpoint serves the other workloads on those route tables too."""
        if self.s3_endpoint is not None and self._own_vpc:
            self.s3_endpoint.add_to_policy(
                iam.PolicyStatement(
                    principals=[iam.AnyPrincipal()],
                    actions=["s3:GetObject"],
                    resources=list(object_arns),
                )
            )
