"""Generator functions: the caller gets each item as soon as the container yields it.

ketch run examples/generators.py --n 5
"""

import time

import ketch

app = ketch.App("generators")


@app.function()
def countdown(n: int):
    for i in range(n, 0, -1):
        yield i
        time.sleep(0.05)


@app.local_entrypoint()
def main(n: int = 3) -> None:
    for item in countdown.remote_gen(n):
        print("got", item)
    print("liftoff")
