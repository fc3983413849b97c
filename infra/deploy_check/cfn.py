"""Just enough of CloudFormation to read a synthesized template the way a deploy would:
the intrinsic functions logd's user data and outputs use, resolved with given values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from infra.deploy_check.root import CheckError

_SUB = re.compile(r"\$\{([^}]+)\}")


def resolve(value: Any, values: Mapping[str, str]) -> str:
    """An Fn::Join / Fn::Sub / Fn::Base64 / Ref / Fn::GetAtt as text; `values` maps logical
    ids, `Logical.Attribute` and pseudo parameters (`AWS::Region`) to what a deploy gives."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, arg),) = value.items()
        if function == "Fn::Base64":
            return resolve(arg, values)
        if function == "Fn::Join":
            separator, parts = arg
            return str(separator).join(resolve(part, values) for part in parts)
        if function == "Fn::Sub" and isinstance(arg, str):
            return _SUB.sub(lambda m: _lookup(m.group(1), values), arg)
        if function == "Ref":
            return _lookup(str(arg), values)
        if function == "Fn::GetAtt":
            return _lookup(".".join(arg), values)
    raise CheckError(f"the template holds {value!r}, which this check cannot resolve")


def _lookup(name: str, values: Mapping[str, str]) -> str:
    if name not in values:
        raise CheckError(f"the template refers to {name}, which this check has no value for")
    return values[name]
