"""Functions for `ketch container exec`, `ketch shell` and `ketch.forward`
(tests/integration/test_sandbox_attach.py)."""

from __future__ import annotations

import http.server
import threading

import ketch

app = ketch.App("attach-app")
secret = ketch.Secret.from_dict({"ATTACH_SECRET": "attach-value"})


@app.function(secrets=[secret])
def hold(queue_name: str) -> str:
    """Runs until told: its container stays up for `ketch container exec`."""
    q = ketch.Queue.from_name(queue_name, create_if_missing=True)
    q.put("running")
    return str(q.get(partition="done", timeout=120))


@app.function()
def forwarded(queue_name: str) -> str:
    """Serves HTTP on a port of its container and hands out the forward's URL."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello through the tunnel"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    q = ketch.Queue.from_name(queue_name, create_if_missing=True)
    with ketch.forward(httpd.server_address[1]) as tunnel:
        q.put(tunnel.url)
        done = str(q.get(partition="done", timeout=120))
    httpd.shutdown()
    return done
