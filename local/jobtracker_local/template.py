"""Reads infra/template.yaml: tables, functions, events and their settings.

The local stack and the tests build every resource from here, so a change to a key schema,
an index, a filter or a batch size in the template is a change to the local stack too.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cfn_flip import load_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "infra" / "template.yaml"


@dataclass
class FunctionSpec:
    logical_id: str
    handler: str
    code_uri: Path
    timeout: int
    memory_size: int
    environment: dict[str, Any]
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_invoke_config: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def attribute(self) -> str:
        return self.handler.rsplit(".", 1)[1]


class Template:
    def __init__(self, path: Path = TEMPLATE_PATH) -> None:
        self.path = path
        self.doc: dict[str, Any] = load_yaml(path.read_text())
        self.resources: dict[str, dict[str, Any]] = self.doc["Resources"]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def parameter_defaults(self) -> dict[str, Any]:
        return {k: v.get("Default") for k, v in self.doc.get("Parameters", {}).items()}

    # ---- tables --------------------------------------------------------------------------
    def table_definitions(self) -> dict[str, dict[str, Any]]:
        """create_table keyword arguments per table logical id (without TableName)."""
        out: dict[str, dict[str, Any]] = {}
        for logical_id, resource in self.of_type("AWS::DynamoDB::Table").items():
            props = resource["Properties"]
            kwargs: dict[str, Any] = {
                "AttributeDefinitions": copy.deepcopy(props["AttributeDefinitions"]),
                "KeySchema": copy.deepcopy(props["KeySchema"]),
                "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
            }
            if props.get("GlobalSecondaryIndexes"):
                kwargs["GlobalSecondaryIndexes"] = copy.deepcopy(props["GlobalSecondaryIndexes"])
            if stream := props.get("StreamSpecification"):
                kwargs["StreamSpecification"] = {
                    "StreamEnabled": True,
                    "StreamViewType": stream["StreamViewType"],
                }
            out[logical_id] = kwargs
        return out

    def ttl_attribute(self, logical_id: str) -> str | None:
        spec = self.resources[logical_id]["Properties"].get("TimeToLiveSpecification")
        return spec["AttributeName"] if spec and spec.get("Enabled") else None

    # ---- functions -----------------------------------------------------------------------
    def functions(self) -> dict[str, FunctionSpec]:
        glob = self.doc.get("Globals", {}).get("Function", {})
        genv = glob.get("Environment", {}).get("Variables", {})
        out = {}
        for logical_id, resource in self.of_type("AWS::Serverless::Function").items():
            props = resource["Properties"]
            env = {**genv, **props.get("Environment", {}).get("Variables", {})}
            out[logical_id] = FunctionSpec(
                logical_id=logical_id,
                handler=props["Handler"],
                code_uri=(self.path.parent / props["CodeUri"]).resolve(),
                timeout=int(props.get("Timeout", glob.get("Timeout", 3))),
                memory_size=int(props.get("MemorySize", glob.get("MemorySize", 128))),
                environment=env,
                events=props.get("Events", {}),
                event_invoke_config=props.get("EventInvokeConfig", {}),
            )
        return out

    # ---- event sources -------------------------------------------------------------------
    def events_of_type(self, *types: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(function logical id, event id, event properties) for every event of these types."""
        return [
            (fn.logical_id, event_id, event.get("Properties", {}))
            for fn in self.functions().values()
            for event_id, event in fn.events.items()
            if event.get("Type") in types
        ]

    def http_api_auth(self) -> dict[str, Any]:
        """The (single) HTTP API's Auth block: DefaultAuthorizer and Authorizers."""
        apis = self.of_type("AWS::Serverless::HttpApi")
        if not apis:
            return {}
        ((_, api),) = apis.items()
        auth: dict[str, Any] = api.get("Properties", {}).get("Auth", {})
        return auth

    def condition_names(self) -> list[str]:
        return list(self.doc.get("Conditions", {}))


@cache
def load_template(path: Path = TEMPLATE_PATH) -> Template:
    return Template(path)


_SUB = re.compile(r"\$\{([^}]+)\}")


def resolve(value: Any, refs: dict[str, Any], attrs: dict[str, Any] | None = None) -> Any:
    """Resolve Ref / GetAtt / Sub / If / Join / Select against local values.

    `refs` maps a logical id or parameter (and pseudo parameters) to its Ref value; `attrs`
    maps "LogicalId.Attribute" to its GetAtt value.
    """
    attrs = attrs or {}
    if isinstance(value, list):
        return [resolve(v, refs, attrs) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            if arg not in refs:
                raise KeyError(f"cannot resolve Ref {arg}")
            return refs[arg]
        if key == "Fn::GetAtt":
            name = ".".join(arg) if isinstance(arg, list) else arg
            if name not in attrs:
                raise KeyError(f"cannot resolve GetAtt {name}")
            return attrs[name]
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1], refs, attrs))

            def sub(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in extra:
                    return str(extra[name])
                if "." in name:
                    return str(attrs[name])
                return str(refs[name])

            return _SUB.sub(sub, text)
        if key == "Fn::Join":
            sep, items = arg
            return sep.join(str(i) for i in resolve(items, refs, attrs))
        if key == "Fn::Select":
            index, items = arg
            return resolve(items, refs, attrs)[int(index)]
        if key == "Fn::If":
            condition, yes, no = arg
            chosen = yes if refs.get(f"Condition:{condition}", False) else no
            return resolve(chosen, refs, attrs)
    return {k: resolve(v, refs, attrs) for k, v in value.items()}
