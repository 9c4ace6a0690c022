"""A small HTTP service (for procession's examples).

GET /health answers 200 once the service is up; GET /hello?name=N answers
"hello, N". It takes a moment to load before it listens, as real services
do: the readiness probe in examples/web.toml waits for it.
"""
import http.server
import sys
import time
import urllib.parse

port = int(sys.argv[1])
print("loading", flush=True)
time.sleep(0.3)  # the warm-up a real service has; the probe waits it out


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/health":
            body = b"ok"
        elif url.path == "/hello":
            name = urllib.parse.parse_qs(url.query).get("name", ["world"])[0]
            body = f"hello, {name}".encode()
            print(f"said hello to {name}", flush=True)
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", port), Handler)
print(f"listening on 127.0.0.1:{port}", flush=True)
server.serve_forever()
