"""Several logd nodes: an Auto Scaling group behind an internal Network Load Balancer.

The nodes are stateless (the rings live in Valkey), so any node may take any frame or
query. Security groups chain: the allowed networks reach the load balancer, the load
balancer reaches the nodes, and the nodes reach Valkey; nothing else gets in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from constructs import Construct

from infra.components.host import (
    AL2023_ARM64_AMI,
    HTTP_PORT,
    UDP_PORT,
    allow_https_out,
    encrypted_root_volume,
    logd_ingress_group,
    session_manager_role,
)
from infra.components.host_boot import HEALTH_PATH, BootValues, render_user_data
from infra.components.readiness import BOOT_TIMEOUT, LogicalIdOf

# First boot installs Python and the wheelhouse; give it that long before health checks count.
BOOT_GRACE = Duration.minutes(10)


class LogdNodes(Construct):
    """The load balancer, the group of nodes, their launch template, security groups and role."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        instance_type: str,
        nodes: int,
        allowed: Sequence[tuple[ec2.IPeer, str]],
        boot: BootValues,
    ) -> None:
        super().__init__(scope, construct_id)
        self.lb_security_group = logd_ingress_group(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description="logd load balancer: UDP writes and HTTP reads from the allowed networks",
            allowed=allowed,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="logd nodes: frames, reads and health checks from the load balancer only",
            allow_all_outbound=False,
        )
        for port, what in ((ec2.Port.udp(UDP_PORT), "frames"), (ec2.Port.tcp(HTTP_PORT), "reads")):
            self.security_group.connections.allow_from(
                self.lb_security_group, port, f"logd {what} through the load balancer"
            )
        # As on the single host (Valkey's rule is added by the stack, which knows both groups).
        allow_https_out(self.security_group)
        self.role = session_manager_role(
            self, "Role", description="logd nodes: Session Manager, their secrets, their wheelhouse"
        )

        # Each node's boot signals the group, which waits for them (readiness.py).
        waits = LogicalIdOf()
        boot = replace(boot, signal_resource=waits.token())
        template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            instance_type=ec2.InstanceType(instance_type),
            machine_image=ec2.MachineImage.resolve_ssm_parameter_at_launch(
                AL2023_ARM64_AMI, os=ec2.OperatingSystemType.LINUX
            ),
            security_group=self.security_group,
            role=self.role,
            associate_public_ip_address=False,
            http_endpoint=True,
            http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
            http_put_response_hop_limit=1,
            block_devices=encrypted_root_volume(),
            user_data=ec2.UserData.custom(render_user_data(boot)),
        )
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            vpc=vpc,
            vpc_subnets=subnets,
            launch_template=template,
            min_capacity=nodes,
            max_capacity=nodes,
            health_checks=autoscaling.HealthChecks.with_additional_checks(
                additional_types=[autoscaling.AdditionalHealthCheckType.ELB],
                grace_period=BOOT_GRACE,
            ),
            # Created once every node signalled that it serves.
            signals=autoscaling.Signals.wait_for_all(timeout=BOOT_TIMEOUT),
            # A new wheelhouse or boot script is a new launch template version: replace the
            # nodes one at a time, each only after the one before it signalled, so the
            # others keep serving.
            update_policy=autoscaling.UpdatePolicy.rolling_update(
                max_batch_size=1,
                min_instances_in_service=nodes - 1,
                wait_on_resource_signals=True,
                pause_time=BOOT_TIMEOUT,
            ),
        )
        waits.element = self.group.node.default_child
        Validations.of(self.group).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-AS3",
                reason="The group has a fixed size; replacements show in its activity "
                "history and the load balancer's health metrics.",
            )
        )

        self.load_balancer = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            vpc_subnets=subnets,
            internet_facing=False,
            security_groups=[self.lb_security_group],
            cross_zone_enabled=True,
        )
        Validations.of(self.load_balancer).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-ELB2",
                reason="NLB access logs cover TLS listeners only; logd's are UDP and TCP.",
            )
        )
        health = elbv2.HealthCheck(
            protocol=elbv2.Protocol.HTTP,
            port=str(HTTP_PORT),
            path=HEALTH_PATH,
            interval=Duration.seconds(10),
            healthy_threshold_count=2,
            unhealthy_threshold_count=3,
        )
        for protocol, port in ((elbv2.Protocol.UDP, UDP_PORT), (elbv2.Protocol.TCP, HTTP_PORT)):
            listener = self.load_balancer.add_listener(
                f"{protocol.value}{port}", port=port, protocol=protocol
            )
            listener.add_targets(
                f"{protocol.value}Nodes",
                port=port,
                protocol=protocol,
                targets=[self.group],
                health_check=health,
                # Short: a stateless node has nothing to finish before it goes.
                deregistration_delay=Duration.seconds(30),
            )
