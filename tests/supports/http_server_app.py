"""Modal's FileServer example (07_web_endpoints/http_server.py) on ketch: a class whose
`@enter` starts `python -m http.server`, served through `experimental.http_server`."""

import subprocess
import sys
import tempfile
from pathlib import Path

import ketch
import ketch.experimental

PORT = 18765  # in the container's own network namespace
FILE_TEXT = "served by the FileServer example\n"

app = ketch.App("http-server-example")


@app.cls()
@ketch.experimental.http_server(port=PORT, proxy_regions=["us-east"], startup_timeout=60)
class FileServer:
    @ketch.enter()
    def start(self) -> None:
        root = Path(tempfile.mkdtemp())
        (root / "hello.txt").write_text(FILE_TEXT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(PORT), "--bind", "127.0.0.1"],
            cwd=root,
        )

    @ketch.exit()
    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
