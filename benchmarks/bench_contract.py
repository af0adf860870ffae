"""Benchmark: the breaking-changes audit of two 5,000-operation OpenAPI documents (target: under 1 s for
normalising both and comparing them). Prints figures; not a test.

    .venv/bin/python benchmarks/bench_contract.py [--operations 5000] [--repeat 5] [--seed 7]

The documents are generated, seeded: 1,250 paths of four operations each (GET/PUT/DELETE on
`/resN/{id}`, POST on `/resN`), every one with query and header parameters, a JSON request body
(PUT/POST) and a 200 response; half the schemas are shared `$ref` components (pydantic's
`ResN-Input` / `ResN-Output`), half inline objects with nested arrays. The candidate is a copy with
~1 % of the operations changed (removed, a new required property, a type change, an enum value added),
its paths' parameters renamed and its component names churned (none of which may count). Printed:
the median and worst of --repeat runs for `operations()` of both documents and `compare()`, the
findings by level, and the peak of traced memory of one run. The JSON parse is timed apart (the
stage reads bytes from HTTP).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stagecheck.contract.audit import audit
from stagecheck.contract.compare import compare
from stagecheck.contract.normalize import operations

TARGET_S = 1.0


def _object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for i in range(rng.randint(4, 8)):
        kind = rng.choice(["string", "integer", "number", "boolean", "enum", "array"])
        if kind == "enum":
            props[f"f{i}"] = {"type": "string", "enum": ["a", "b", "c"], "description": "an enum"}
        elif kind == "array" and depth < 2:
            props[f"f{i}"] = {"type": "array", "items": _object(rng, depth + 1)}
        else:
            props[f"f{i}"] = {"type": kind if kind != "array" else "string", "maxLength": 64} \
                if kind == "string" else {"type": "integer" if kind == "array" else kind}
    return {"type": "object", "required": sorted(props)[:2], "properties": props, "title": "generated"}


def generate(n_ops: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for r in range(n_ops // 4):
        shared = r % 2 == 0
        if shared:
            schemas[f"Res{r}-Input"] = _object(rng)
            schemas[f"Res{r}-Output"] = _object(rng)
            body = {"$ref": f"#/components/schemas/Res{r}-Input"}
            out = {"$ref": f"#/components/schemas/Res{r}-Output"}
        else:
            body, out = _object(rng), _object(rng)
        params = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                  {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}]

        def op(with_body: bool, params: list[Any] = params, body: Any = body, out: Any = out) -> dict[str, Any]:
            o: dict[str, Any] = {"parameters": copy.deepcopy(params), "summary": "generated", "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": copy.deepcopy(out)}}},
                "404": {"description": "missing"}}}
            if with_body:
                o["requestBody"] = {"required": True, "content": {"application/json": {"schema": copy.deepcopy(body)}}}
            return o

        item_params = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
        paths[f"/res{r}/{{id}}"] = {"parameters": item_params, "get": op(False), "put": op(True),
                                   "delete": op(False)}
        paths[f"/res{r}"] = {"post": op(True)}
    return {"openapi": "3.1.0", "info": {"title": "bench", "version": "1"}, "paths": paths,
            "components": {"schemas": schemas}}


def candidate_of(base: dict[str, Any], seed: int) -> dict[str, Any]:
    rng = random.Random(seed + 1)
    cand = json.loads(json.dumps(base).replace("-Input", "-In").replace("-Output", "-Out"))
    for path in list(cand["paths"]):
        if "{id}" in path:
            item = cand["paths"].pop(path)
            item["parameters"][0]["name"] = "res_id"
            cand["paths"][path.replace("{id}", "{res_id}")] = item
    keys = sorted(cand["paths"])
    for path in rng.sample(keys, max(1, len(keys) // 100)):
        item = cand["paths"][path]
        method = sorted(m for m in item if m != "parameters")[0]
        change = rng.choice(["remove", "required", "type", "enum"])
        if change == "remove" and len([m for m in item if m != "parameters"]) > 1:
            item.pop(method)
            continue
        schema = item[method]["responses"]["200"]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = cand["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        props = schema["properties"]
        if change == "required":
            props["added"] = {"type": "string"}
            schema["required"] = [*schema["required"], "added"]
        elif change == "type":
            first = sorted(props)[0]
            props[first] = {"type": "boolean"}
        else:
            props["g"] = {"type": "string", "enum": ["x"]}
    return cand


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    base = generate(args.operations, args.seed)
    cand = candidate_of(base, args.seed)
    raw_base, raw_cand = json.dumps(base).encode(), json.dumps(cand).encode()
    started = time.perf_counter()
    base, cand = json.loads(raw_base), json.loads(raw_cand)
    parse_s = time.perf_counter() - started
    norm, comp, total, cpu = [], [], [], []
    found: list[Any] = []
    for _ in range(args.repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        leaves: dict[Any, Any] = {}
        ops_base, ops_cand = operations(base, leaves), operations(cand, leaves)
        t1 = time.perf_counter()
        found = compare(ops_base, ops_cand)
        t2 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        norm.append(t1 - t0)
        comp.append(t2 - t1)
        total.append(t2 - t0)
    tracemalloc.start()
    audit(base, cand)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    levels = Counter(f.level.value for f in found)
    ids = Counter(f.id for f in found)
    print(f"documents: {len(ops_base)} and {len(ops_cand)} operations, {len(raw_base) / 1e6:.1f} and "
          f"{len(raw_cand) / 1e6:.1f} MB of JSON (json.loads of both: {parse_s:.2f} s, not "
          "counted)")
    print(f"normalise both: median {statistics.median(norm):.3f} s, worst {max(norm):.3f} s")
    print(f"compare:        median {statistics.median(comp):.3f} s, worst {max(comp):.3f} s")
    print(f"total:          median {statistics.median(total):.3f} s, worst {max(total):.3f} s "
          f"(target < {TARGET_S:g} s: {'met' if max(total) < TARGET_S else 'NOT met'})")
    print(f"CPU time:       median {statistics.median(cpu):.3f} s, worst {max(cpu):.3f} s (wall minus waiting for "
          f"a core: on a shared machine the wall figures above carry the wait; load {_load()})")
    print(f"peak traced memory of one audit: {peak / 1e6:.0f} MB")
    print(f"findings: {dict(levels)}; by rule: {dict(ids.most_common())}")
    print(f"command: .venv/bin/python benchmarks/bench_contract.py --operations {args.operations} "
          f"--repeat {args.repeat} --seed {args.seed}")


if __name__ == "__main__":
    main()
