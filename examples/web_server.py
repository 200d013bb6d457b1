"""Any web server as an endpoint: the function starts it on a port, and traffic flows to
that port once it accepts. Each container has its port to itself.

    ketch run examples/web_server.py
    ketch serve examples/web_server.py
    curl "$MY_FILE_SERVER_URL/"              # a directory listing of /
"""

import subprocess
import sys
import urllib.request

import ketch

app = ketch.App("web-server")


@app.function()
@ketch.concurrent(max_inputs=100)
@ketch.web_server(8000)
def my_file_server() -> None:
    # Bind to all interfaces (0.0.0.0), not only 127.0.0.1.
    subprocess.Popen([sys.executable, "-m", "http.server", "-d", "/", "8000"])


def listing(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as resp:
        page = resp.read().decode()
    return page.split("<title>", 1)[1].split("</title>", 1)[0]


@app.local_entrypoint()
def main() -> None:
    print("my_file_server:", listing(f"{my_file_server.get_web_url()}/"))
