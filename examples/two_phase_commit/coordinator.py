"""Two-phase commit coordinator (for procession's examples).

Speaks JSON lines on stdin/stdout and addresses other children with
envelopes ({"to": NAME, ...}); procession adds "from" on delivery.

  stdin  {"cmd": "begin", "tx": T}                  start a transaction
  out    {"to": P, "type": "prepare", "tx": T}     to every participant
  in     {"from": P, "type": "vote", "vote": "yes"|"no"}
  out    {"to": P, "type": "commit"|"abort", "tx": T}
  in     {"from": P, "type": "ack"}
  out    {"type": "done", "tx": T, "outcome": "committed"|"aborted"}

Participants are named on the command line, or with `--replicas NAME N`
as NAME-1 … NAME-N (procession's names for `count = N` replicas).
"""
import json
import sys

if sys.argv[1:2] == ["--replicas"]:
    prefix, n = sys.argv[2], int(sys.argv[3])
    participants = [f"{prefix}-{i}" for i in range(1, n + 1)]
else:
    participants = sys.argv[1:]


def say(message):
    print(json.dumps(message), flush=True)


votes, acks, tx, decision = {}, set(), None, None
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("cmd") == "begin":
        tx, votes, acks, decision = msg["tx"], {}, set(), None
        for p in participants:
            say({"to": p, "type": "prepare", "tx": tx})
    elif msg.get("type") == "vote" and msg.get("tx") == tx:
        votes[msg["from"]] = msg["vote"]
        if len(votes) == len(participants):
            decision = "commit" if all(v == "yes" for v in votes.values()) else "abort"
            for p in participants:
                say({"to": p, "type": decision, "tx": tx})
    elif msg.get("type") == "ack" and msg.get("tx") == tx:
        acks.add(msg["from"])
        if len(acks) == len(participants):
            outcome = "committed" if decision == "commit" else "aborted"
            say({"type": "done", "tx": tx, "outcome": outcome})
