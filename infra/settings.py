"""Deploy settings: the CDK context options (`-c name=value`) of the logd app, checked.

A bad value stops the synth with one sentence naming the option. Values come as text
from the command line, or typed (numbers, lists) from `cdk.json` / `cdk.context.json`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Graviton families carry a `g` after the generation digit: t4g, m7g, c7gn, r8gd, im4gn.
_GRAVITON = re.compile(r"^[a-z]+\d+[a-z]*g[a-z]*\.[a-z0-9]+$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_PREFIX_LIST = re.compile(r"^pl-[0-9a-f]{8,17}$")
# A sanity bound on typos (nodes=100); Valkey's connections are far from a limit there.
MAX_NODES = 20
# us-east-1a, us-gov-west-1b, and Local Zones like us-west-2-lax-1a.
_AZ = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+(?:-[a-z]+-\d+)?[a-z]$")
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}$")


class SettingsError(ValueError):
    """A context option has a value the app cannot deploy; the message is one sentence."""


@dataclass(frozen=True, kw_only=True)
class DeploySettings:
    """Every context option, with its default."""

    vpc_id: str | None = None
    """Deploy into this existing VPC (looked up at synth time); None: create a new VPC."""
    vpc_cidr: str = "10.0.0.0/16"
    """Address range of the new VPC (ignored with vpc_id)."""
    create_endpoints: bool = True
    """Create the S3, Secrets Manager and SSM endpoints; false when the VPC already has them."""
    instance_type: str = "t4g.small"
    """A Graviton (arm64) type: the wheelhouse is built for aarch64."""
    rotation_days: int = 30
    """Days between automatic rotations of each secret."""
    allowed_cidrs: tuple[str, ...] = ()
    """IPv4 networks that may write and read; empty: the VPC's own range."""
    allowed_prefix_list: str | None = None
    """A managed prefix list (pl-...) that may write and read, in addition to allowed_cidrs."""
    alarm_topic_arn: str | None = None
    """SNS topic told when a rotation fails; None: the alarm only shows in CloudWatch."""
    alerts_sns_topic_arn: str | None = None
    """SNS topic that logd's alert rules notify (logdrc.yml `notify: {sns_topic_arn: ...}`):
    the hosts may publish to it, through an SNS endpoint; None: no SNS for alerts."""
    nodes: int = 1
    """1: one instance with its own store; more: that many behind a load balancer, on Valkey."""
    az: str | None = None
    """The availability zone of logd's subnet (new VPC) or of the subnets used (existing VPC);
    None: the region's first. Graviton types are not offered in every zone, and a zone that
    lacks the instance type fails the deploy, so this picks one that has it."""

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> DeploySettings:
        """Read and check every option; `get` is `node.try_get_context`."""
        return cls(
            vpc_id=_optional(get("vpc_id"), "vpc_id", _VPC_ID, "a VPC id like vpc-0123abcd"),
            vpc_cidr=_cidr(get("vpc_cidr") or cls.vpc_cidr, "vpc_cidr"),
            create_endpoints=_bool(get("create_endpoints"), "create_endpoints", default=True),
            instance_type=_instance_type(get("instance_type") or cls.instance_type),
            rotation_days=_days(get("rotation_days"), default=cls.rotation_days),
            allowed_cidrs=tuple(_cidr(c, "allowed_cidrs") for c in _list(get("allowed_cidrs"))),
            allowed_prefix_list=_optional(
                get("allowed_prefix_list"),
                "allowed_prefix_list",
                _PREFIX_LIST,
                "a prefix list id like pl-0123abcd",
            ),
            alarm_topic_arn=_optional(
                get("alarm_topic_arn"), "alarm_topic_arn", _TOPIC_ARN, "an SNS topic ARN"
            ),
            alerts_sns_topic_arn=_optional(
                get("alerts_sns_topic_arn"), "alerts_sns_topic_arn", _TOPIC_ARN, "an SNS topic ARN"
            ),
            nodes=_nodes(get("nodes"), default=cls.nodes),
            az=_optional(get("az"), "az", _AZ, "an availability zone name like us-east-1a"),
        )


def _optional(value: Any, name: str, pattern: re.Pattern[str], expected: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise SettingsError(f"context {name} must be {expected}, not {value!r}")
    return value


def _cidr(value: Any, name: str) -> str:
    try:
        network = ipaddress.IPv4Network(str(value).strip(), strict=True)
    except ValueError:
        raise SettingsError(
            f"context {name} must hold IPv4 networks like 10.20.0.0/16, not {value!r}"
        ) from None
    if network.prefixlen == 0:
        raise SettingsError(f"context {name} must not open logd to the whole internet (/0)")
    return str(network)


def _list(value: Any) -> Sequence[Any]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        return [part for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return value
    raise SettingsError(f"context allowed_cidrs must be a comma-separated list, not {value!r}")


def _bool(value: Any, name: str, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in ("true", "false"):
        raise SettingsError(f"context {name} must be true or false, not {value!r}")
    return text == "true"


def _instance_type(value: Any) -> str:
    text = str(value)
    if not _GRAVITON.match(text):
        raise SettingsError(
            f"context instance_type must be a Graviton (arm64) type like t4g.small, not {text!r}"
        )
    return text


def _days(value: Any, *, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        days = int(str(value))
    except ValueError:
        days = 0
    if not 1 <= days <= 365:
        raise SettingsError(
            f"context rotation_days must be a whole number from 1 to 365, not {value!r}"
        )
    return days


def _nodes(value: Any, *, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        nodes = int(str(value))
    except ValueError:
        nodes = 0
    if not 1 <= nodes <= MAX_NODES:
        raise SettingsError(
            f"context nodes must be a whole number from 1 to {MAX_NODES}, not {value!r}"
        )
    return nodes
