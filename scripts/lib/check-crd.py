"""Validates custom resources against their CustomResourceDefinition's schema, strictly (a property
the schema does not name is an error, as `kubernetes-validate --strict` does for built-in kinds).

usage: check-crd.py CRD.yaml RESOURCES.yaml
"""
import sys

import jsonschema
import yaml


def strict(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)


crd_path, resources_path = sys.argv[1], sys.argv[2]
crd = yaml.safe_load(open(crd_path))
for doc in (d for d in yaml.safe_load_all(open(resources_path)) if d):
    group, version = doc["apiVersion"].split("/")
    if group != crd["spec"]["group"] or doc["kind"] != crd["spec"]["names"]["kind"]:
        sys.exit(f"{resources_path}: {doc['kind']} is not a {crd['spec']['names']['kind']}")
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
    strict(schema)
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(doc))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        sys.exit(f"{resources_path}: {where}: {error.message[:300]}")
print(f"{resources_path}: valid against {crd['metadata']['name']} (strict)")
