"""The shared store of a several-node logd: ElastiCache for Valkey, TLS and AUTH required.

One shard (logd keeps each ring in one hash slot anyway) with a replica and automatic
failover, encrypted in transit and at rest. The auth token is a generated secret that
CloudFormation hands to ElastiCache as a dynamic reference: never in the template.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.components.host_boot import STORE_PORT

ENGINE_VERSION = "8.0"
NODE_TYPE = "cache.t4g.micro"
# A primary and a replica: the store survives the loss of one cache node.
CACHE_NODES = 2
# ElastiCache takes 16-128 printable characters; letters and digits suit a unit file too.
TOKEN_LENGTH = 64


class LogdValkey(Construct):
    """The replication group, its subnet group, its security group and its auth token."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="logd Valkey: reached by the logd nodes only",
            allow_all_outbound=False,
        )
        self.auth_token = secretsmanager.Secret(
            self,
            "AuthToken",
            description="logd Valkey auth token (LOGD_STORE_PASSWORD of every node)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=TOKEN_LENGTH, exclude_punctuation=True, include_space=False
            ),
        )
        Validations.of(self.auth_token).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SMG4",
                reason="Rotating the token needs ElastiCache's ROTATE/SET strategy and a "
                "restart of every node; done by hand (README), not scheduled.",
            )
        )
        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "Subnets",
            description="logd Valkey: the subnets of the logd nodes",
            subnet_ids=vpc.select_subnets(
                subnet_type=subnets.subnet_type, availability_zones=subnets.availability_zones
            ).subnet_ids,
        )
        self.group = elasticache.CfnReplicationGroup(
            self,
            "ReplicationGroup",
            replication_group_description="logd store: rings, tails and the replay guard",
            engine="valkey",
            engine_version=ENGINE_VERSION,
            cache_node_type=NODE_TYPE,
            num_cache_clusters=CACHE_NODES,
            automatic_failover_enabled=True,
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            port=STORE_PORT,
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            auth_token=self.auth_token.secret_value.unsafe_unwrap(),
        )
        Validations.of(self.group).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-AEC4",
                reason="Multi-AZ needs subnets in two AZs; the default VPC has one, "
                "and the replica still fails over within it.",
            )
        )

    @property
    def primary_endpoint(self) -> str:
        """The primary's DNS name (a token): the replica takes it over on failover."""
        return str(self.group.attr_primary_end_point_address)
