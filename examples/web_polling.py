"""Polling for a long job: one endpoint spawns it and returns its call id at once, another
answers 202 until the result is there.

    ketch run examples/web_polling.py
    ketch serve examples/web_polling.py
    curl -X POST "$URL/accept"                # {"call_id": "fc-..."}
    curl -i "$URL/result/fc-..."              # 202 until done, then the result

The job's containers import this module without FastAPI: the web app is built inside the
web function.
"""

import json
import time
import urllib.error
import urllib.request
from typing import Any

import ketch

app = ketch.App("web-polling")


@app.function()
def slow_operation(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds:g}s"


@app.function()
@ketch.asgi_app()
def fastapi_app() -> Any:
    import fastapi

    web_app = fastapi.FastAPI()

    @web_app.post("/accept")
    async def accept_job(seconds: float = 1.0) -> dict[str, str]:
        call = await slow_operation.spawn.aio(seconds)
        return {"call_id": str(call.object_id)}

    @web_app.get("/result/{call_id}")
    async def poll_results(call_id: str) -> Any:
        function_call = ketch.FunctionCall.from_id(call_id)
        try:
            return await function_call.get.aio(timeout=0)
        except TimeoutError:
            return fastapi.responses.JSONResponse({}, status_code=202)

    return web_app


@app.local_entrypoint()
def main(seconds: float = 1.0) -> None:
    base = str(fastapi_app.get_web_url())
    accept = urllib.request.Request(f"{base}/accept?seconds={seconds}", method="POST")
    with urllib.request.urlopen(accept, timeout=60) as resp:
        call_id = json.loads(resp.read())["call_id"]
    print("accepted", call_id)
    polls = 0
    while True:
        with urllib.request.urlopen(f"{base}/result/{call_id}", timeout=60) as resp:
            if resp.status == 200:
                print("result", json.loads(resp.read()), "after", polls, "polls of 202")
                return
        polls += 1
        time.sleep(0.2)
