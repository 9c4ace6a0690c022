"""GETs one URL and prints the status and the body (for procession's examples)."""
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
    print(response.status, response.read().decode(), flush=True)
