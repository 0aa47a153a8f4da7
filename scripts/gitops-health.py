#!/usr/bin/env python3
"""Evaluates the GitOps health checks shipped in examples/gitops/ against objects.

    gitops-health.py OBJECTS_JSON
        OBJECTS_JSON: a JSON list of SecretBinding / SecretSource objects. Prints a JSON
        list with, per object, {"argocd": <status>, "flux": <state>}: the Argo CD Lua
        health status (Healthy, Degraded, Progressing) and the Flux healthCheckExprs state
        (inProgress, failed, current, or error when an expression cannot be evaluated,
        which Flux treats as still in progress).

Run with the test venv's Python (scripts/test-servers.sh installs lupa and cel-python).
"""
import json
import pathlib
import sys

import celpy
import lupa
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent / "examples" / "gitops"


def lua_checks():
    cm = yaml.safe_load((ROOT / "argocd-health.yaml").read_text())
    prefix = "resource.customizations.health.secretsync.dev_"
    return {k[len(prefix):]: v for k, v in cm["data"].items() if k.startswith(prefix)}


def cel_checks():
    ks = yaml.safe_load((ROOT / "flux-kustomization.yaml").read_text())
    return {c["kind"]: c for c in ks["spec"]["healthCheckExprs"]}


def argocd(script, obj):
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    run = lua.eval("function(obj, script) return load(script, 'health', 't', {obj = obj, ipairs = ipairs})() end")
    result = run(lua.table_from(to_lua(lua, obj)), script)
    return result["status"]


def to_lua(lua, v):
    if isinstance(v, dict):
        return {k: (lua.table_from(to_lua(lua, x)) if isinstance(x, (dict, list)) else x) for k, x in v.items()}
    if isinstance(v, list):
        return [lua.table_from(to_lua(lua, x)) if isinstance(x, (dict, list)) else x for x in v]
    return v


def flux(check, obj):
    env = celpy.Environment()
    activation = {k: celpy.json_to_cel(v) for k, v in obj.items()}
    for state in ("inProgress", "failed", "current"):
        try:
            value = env.program(env.compile(check[state])).evaluate(activation)
        except Exception:  # a missing field: Flux keeps waiting
            return "error"
        if isinstance(value, celpy.CELEvalError):
            return "error"
        if bool(value):
            return state
    return "none"


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    lua, cel = lua_checks(), cel_checks()
    out = []
    for obj in json.loads(argv[1]):
        kind = obj["kind"]
        out.append({"argocd": argocd(lua[kind], obj), "flux": flux(cel[kind], obj)})
    json.dump(out, sys.stdout)
    return 0



if __name__ == "__main__":
    sys.exit(main(sys.argv))
