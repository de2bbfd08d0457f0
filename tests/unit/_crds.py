"""The vendored CRDs (tests/crds, README there: source, tag, sha256) as JSON-schema validators of what the API
server would accept and keep.

The API server prunes every field a structural schema does not name (unless the schema says
`x-kubernetes-preserve-unknown-fields`): a misspelt `readOnlyRootFilesystem` would be dropped without a word, and the
pod would run with a writable root. So the validators here refuse unknown fields where the server would prune them,
and check `format: int32` / `int64` ranges, which the server enforces too.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from jsonschema import Draft7Validator, FormatChecker

CRDS = Path(__file__).resolve().parents[1] / "crds"
FILES = {"PyTorchJob": "kubeflow.org_pytorchjobs.yaml", "AscendJob": "mindxdl.gitee.com_ascendjobs.yaml"}
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class Crd:
    kind: str
    api_version: str  # group/version
    validator: Draft7Validator

    def errors(self, doc: dict) -> list[str]:
        found = [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in self.validator.iter_errors(doc)
        ]
        if doc.get("apiVersion") != self.api_version or doc.get("kind") != self.kind:
            found.append(
                f"apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')}, the CRD serves {self.api_version}"
            )
        return found


def pruning_as_refusal(schema):
    """The schema with `additionalProperties: false` wherever the API server would prune unknown fields."""
    if isinstance(schema, list):
        return [pruning_as_refusal(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: pruning_as_refusal(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def format_checker() -> FormatChecker:
    checker = FormatChecker()
    for name, (low, high) in INT_RANGES.items():
        checker.checks(name)(lambda value, low=low, high=high: not isinstance(value, int) or low <= value <= high)
    return checker


def sha256_listed(file: str) -> str:
    row = next(line for line in (CRDS / "README.md").read_text().splitlines() if line.startswith(f"| `{file}` "))
    return re.findall(r"`([0-9a-f]{64})`", row)[0]


def sha256_of(file: str) -> str:
    return hashlib.sha256((CRDS / file).read_bytes()).hexdigest()


@functools.cache
def crd(kind: str) -> Crd:
    doc = yaml.safe_load((CRDS / FILES[kind]).read_text())
    assert doc["kind"] == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == kind
    (version,) = [v for v in doc["spec"]["versions"] if v.get("served", True) and v.get("storage", True)]
    schema = pruning_as_refusal(version["schema"]["openAPIV3Schema"])
    Draft7Validator.check_schema(schema)
    validator = Draft7Validator(schema, format_checker=format_checker())
    return Crd(kind, f"{doc['spec']['group']}/{version['name']}", validator)
