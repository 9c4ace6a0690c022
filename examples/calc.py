"""A tiny JSON calculator for examples/embed.rs.

Reads one JSON request per line, e.g. {"id": 1, "op": "add", "args": [2, 3]},
answers {"id": 1, "result": 5} on stdout and logs each computation on stderr.
"""
import json
import sys

OPS = {
    "add": lambda args: sum(args),
    "mul": lambda args: __import__("math").prod(args),
}

print(json.dumps({"status": "up"}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    op = OPS.get(request.get("op"))
    if op is None:
        reply = {"id": request.get("id"), "error": f"unknown op {request.get('op')!r}"}
    else:
        result = op(request["args"])
        reply = {"id": request.get("id"), "result": result}
        print(f"computed {request['op']}{tuple(request['args'])} = {result}", file=sys.stderr, flush=True)
    print(json.dumps(reply), flush=True)
