"""A tiny key-value service for procession's scripted demo.

Lines on stdin: `SET key value` -> `OK`, `GET key` -> `VALUE value` or
`MISSING key`. It prints `listening` once it is ready. State lives in
memory only: a restarted instance starts empty.
"""
import sys
import time

store = {}
time.sleep(0.2)  # pretend to start up
print("listening", flush=True)
for line in sys.stdin:
    words = line.split(maxsplit=2)
    if len(words) == 3 and words[0] == "SET":
        store[words[1]] = words[2].rstrip("\n")
        print("OK", flush=True)
    elif len(words) == 2 and words[0] == "GET":
        key = words[1]
        print(f"VALUE {store[key]}" if key in store else f"MISSING {key}", flush=True)
    else:
        print(f"ERROR unknown command: {line.strip()}", file=sys.stderr, flush=True)
