"""Two-phase commit participant (for procession's examples).

Votes as told on the command line ("yes" by default), then applies the
coordinator's decision and acknowledges it. Logs to stderr.
"""
import json
import sys

vote = sys.argv[1] if len(sys.argv) > 1 else "yes"
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("type") == "prepare":
        print(json.dumps({"to": msg["from"], "type": "vote", "tx": msg["tx"], "vote": vote}), flush=True)
    elif msg.get("type") in ("commit", "abort"):
        print(f"{msg['type']} {msg['tx']}", file=sys.stderr, flush=True)
        print(json.dumps({"to": msg["from"], "type": "ack", "tx": msg["tx"]}), flush=True)
