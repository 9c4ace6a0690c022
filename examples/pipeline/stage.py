"""One stage of procession's JSON pipeline example.

  stage.py produce N   print {"n": 1} .. {"n": N}, then exit
  stage.py double      for each {"n": x} on stdin print {"n": 2x}
  stage.py sum         add up every "n" on stdin; at EOF print {"total": T, "count": C}
"""
import json
import sys

mode = sys.argv[1]
if mode == "produce":
    for i in range(1, int(sys.argv[2]) + 1):
        print(json.dumps({"n": i}))
elif mode == "double":
    for line in sys.stdin:
        print(json.dumps({"n": 2 * json.loads(line)["n"]}), flush=True)
elif mode == "sum":
    total = count = 0
    for line in sys.stdin:
        total += json.loads(line)["n"]
        count += 1
    print(json.dumps({"total": total, "count": count}))
