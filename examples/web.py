"""Web endpoints: a FastAPI endpoint with a typed query parameter, and a POST handler."""

import ketch

app = ketch.App("web")


@app.function()
@ketch.fastapi_endpoint()
def square(x: int) -> dict[str, int]:
    return {"square": x * x}


@app.function()
@ketch.fastapi_endpoint(method="POST")
def echo(item: dict) -> dict:
    return {"got": item}


@app.local_entrypoint()
def main() -> None:
    import urllib.request

    url = square.get_web_url()
    with urllib.request.urlopen(f"{url}?x=42") as resp:
        print(url, resp.read().decode())
