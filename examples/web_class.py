"""A web server per parameter set: `?root=...` in the URL picks the class parameters, and each
distinct set of them gets containers of its own."""

import subprocess
import sys
import urllib.request

import ketch

app = ketch.App("web-class")


@app.cls()
@ketch.concurrent(max_inputs=100)
class Server:
    root: str = ketch.parameter(default=".")

    @ketch.web_server(8000)
    def files(self) -> None:
        subprocess.Popen([sys.executable, "-m", "http.server", "-d", self.root, "8000"])


@app.local_entrypoint()
def main() -> None:
    url = Server().files.get_web_url()
    for query in ("", "?root=%2F"):
        with urllib.request.urlopen(url + query, timeout=60) as resp:
            listing = resp.read().decode()
        print(f"root{query or '=.'}: {resp.status}, lists etc/: {'etc/' in listing}")
