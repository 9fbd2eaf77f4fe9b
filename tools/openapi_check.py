#!/usr/bin/env python3
"""Validates an OpenAPI 3.0 document: required fields, operations and responses, path-template
parameters declared, every $ref resolving, and schema keywords and types that OpenAPI 3.0
allows. Prints each problem with its location; exit 1 if there is any.
Usage: tools/openapi_check.py docs/api/openapi.yaml"""
import re
import sys

import yaml

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
TYPES = {"string", "integer", "number", "boolean", "array", "object"}
SCHEMA_KEYS = {"type", "properties", "required", "items", "additionalProperties", "enum", "format",
               "description", "default", "minimum", "maximum", "pattern", "$ref", "oneOf", "anyOf",
               "allOf", "nullable", "example", "minItems", "maxItems", "minLength", "maxLength",
               "title", "readOnly", "writeOnly", "exclusiveMinimum", "exclusiveMaximum", "not",
               "uniqueItems", "multipleOf", "discriminator"}
problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def resolve(doc, ref, where):
    if not isinstance(ref, str) or not ref.startswith("#/"):
        problem(where, f"$ref {ref!r} must be a local '#/...' reference")
        return None
    node = doc
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            problem(where, f"$ref {ref} does not resolve")
            return None
        node = node[part]
    return node


def check_schema(doc, s, where):
    if not isinstance(s, dict):
        problem(where, "schema must be an object")
        return
    if "$ref" in s:
        resolve(doc, s["$ref"], where)
        return
    for k in s:
        if k not in SCHEMA_KEYS and not k.startswith("x-"):
            problem(where, f"unknown schema keyword {k!r}")
    t = s.get("type")
    if t is not None and t not in TYPES:
        problem(where, f"type {t!r} is not one of {sorted(TYPES)}")
    if t == "array" and "items" not in s:
        problem(where, "array schema needs items")
    for name, sub in (s.get("properties") or {}).items():
        check_schema(doc, sub, f"{where}.properties.{name}")
    if isinstance(s.get("items"), dict):
        check_schema(doc, s["items"], f"{where}.items")
    if isinstance(s.get("additionalProperties"), dict):
        check_schema(doc, s["additionalProperties"], f"{where}.additionalProperties")
    for req in s.get("required") or []:
        if req not in (s.get("properties") or {}):
            problem(where, f"required property {req!r} is not defined")
    for k in ("oneOf", "anyOf", "allOf"):
        for i, sub in enumerate(s.get(k) or []):
            check_schema(doc, sub, f"{where}.{k}[{i}]")


def check_content(doc, content, where):
    if not isinstance(content, dict) or not content:
        problem(where, "content must map media types to objects")
        return
    for media, obj in content.items():
        if "schema" in (obj or {}):
            check_schema(doc, obj["schema"], f"{where}.{media}.schema")


def check_parameter(doc, p, where):
    if "$ref" in p:
        p = resolve(doc, p["$ref"], where) or {}
    for k in ("name", "in"):
        if k not in p:
            problem(where, f"parameter needs {k!r}")
    if p.get("in") not in {"path", "query", "header", "cookie"}:
        problem(where, f"parameter 'in' {p.get('in')!r} is invalid")
    if p.get("in") == "path" and p.get("required") is not True:
        problem(where, "path parameters must be required: true")
    if "schema" in p:
        check_schema(doc, p["schema"], f"{where}.schema")
    return p


def main(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict):
        print(f"{path}: not a YAML mapping")
        return 1
    if not str(doc.get("openapi", "")).startswith("3.0"):
        problem("openapi", "must be 3.0.x")
    info = doc.get("info") or {}
    for k in ("title", "version"):
        if k not in info:
            problem("info", f"needs {k!r}")
    schemes = ((doc.get("components") or {}).get("securitySchemes") or {})
    for req in doc.get("security") or []:
        for name in req:
            if name not in schemes:
                problem("security", f"unknown security scheme {name!r}")
    for name, s in ((doc.get("components") or {}).get("schemas") or {}).items():
        check_schema(doc, s, f"components.schemas.{name}")
    paths = doc.get("paths")
    if not isinstance(paths, dict) or not paths:
        problem("paths", "must be a non-empty mapping")
        paths = {}
    operation_ids = set()
    for route, item in paths.items():
        if not route.startswith("/"):
            problem(route, "paths must start with '/'")
        templated = set(re.findall(r"{([^}]+)}", route))
        for method, op in (item or {}).items():
            where = f"paths.{route}.{method}"
            if method not in METHODS:
                problem(where, "unknown operation")
                continue
            declared = set()
            for i, p in enumerate(op.get("parameters") or []):
                p = check_parameter(doc, p, f"{where}.parameters[{i}]")
                if p.get("in") == "path":
                    declared.add(p.get("name"))
            if templated != declared:
                problem(where, f"path parameters {sorted(templated)} but declared {sorted(declared)}")
            if "operationId" in op:
                if op["operationId"] in operation_ids:
                    problem(where, "duplicate operationId")
                operation_ids.add(op["operationId"])
            if "requestBody" in op:
                check_content(doc, op["requestBody"].get("content"), f"{where}.requestBody")
            responses = op.get("responses")
            if not isinstance(responses, dict) or not responses:
                problem(where, "needs responses")
                continue
            for code, resp in responses.items():
                rw = f"{where}.responses.{code}"
                if not re.fullmatch(r"[1-5](\d\d|XX)|default", str(code)):
                    problem(rw, "is not an HTTP status")
                if "$ref" in resp:
                    resp = resolve(doc, resp["$ref"], rw) or {}
                if "description" not in resp:
                    problem(rw, "needs a description")
                if "content" in resp:
                    check_content(doc, resp["content"], rw)
    for p in problems:
        print(f"{path}: {p}")
    if problems:
        return 1
    print(f"{path}: valid OpenAPI {doc['openapi']}, {len(paths)} paths")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
