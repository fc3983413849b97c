"""Readiness: CloudFormation waits until each logd host's first boot worked.

The boot script (files/user_data.sh) calls `aws cloudformation signal-resource` once logd
answers /healthz, or with FAILURE as soon as a step fails. The resource that waits is the
instance (single host) or the Auto Scaling group (nodes: at creation, and on every rolling
update for each new node). Whatever depends on that resource, the rotation schedules among
them, starts only after the signal. The call reaches CloudFormation through its interface
endpoint (network.py), since the subnets have no NAT.

The boot script must name the resource that waits, but the instance's logical id is only
known once the instance exists (and, with user_data_causes_replacement, includes a hash of
that very script): `LogicalIdOf` is a lazy value that becomes the id at synth time, the way
CDK's own cfn-signal user data does it.
"""

from __future__ import annotations

import jsii
from aws_cdk import (
    Aws,
    CfnCreationPolicy,
    CfnElement,
    CfnResource,
    CfnResourceSignal,
    Duration,
    IResolveContext,
    IStringProducer,
    Lazy,
)
from aws_cdk import aws_iam as iam

from infra.components.host_boot import BOOT_TIMEOUT_MINUTES

BOOT_TIMEOUT = Duration.minutes(BOOT_TIMEOUT_MINUTES)
SIGNAL_ACTION = "cloudformation:SignalResource"


@jsii.implements(IStringProducer)
class LogicalIdOf:
    """The logical id of `element`, set once it exists; resolved at synth time."""

    def __init__(self) -> None:
        self.element: CfnElement | None = None

    def produce(self, context: IResolveContext) -> str:
        if self.element is None:
            raise ValueError("the resource that waits for the boot signal was never set")
        # The element's own id (with any override, like the instance's user-data hash);
        # Stack.get_logical_id would give the id before overrides.
        return str(self.element.logical_id)

    def token(self) -> str:
        return str(Lazy.uncached_string(self))


def wait_for_signal(resource: CfnResource) -> None:
    """The resource is created only when its one host signals (or fails on FAILURE/timeout)."""
    resource.cfn_options.creation_policy = CfnCreationPolicy(
        resource_signal=CfnResourceSignal(count=1, timeout=BOOT_TIMEOUT.to_iso_string())
    )


def signal_statement() -> iam.PolicyStatement:
    """What a host needs to signal: SignalResource on this stack only."""
    return iam.PolicyStatement(actions=[SIGNAL_ACTION], resources=[Aws.STACK_ID])
