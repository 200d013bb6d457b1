"""The smallest ketch app: one function, called remotely from a local entrypoint."""

import ketch

app = ketch.App("hello")


@app.function()
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.local_entrypoint()
def main(n: int = 7) -> None:
    print("square of", n, "is", square.remote(n))
    print("squares:", list(square.map(range(5))))
