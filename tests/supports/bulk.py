"""An app for a `.map` over a million inputs, run from a script of its own."""

import ketch

app = ketch.App("ketch-bulk")


# One container taking many inputs at once: the map's cost is then the platform's own.
@app.function(max_containers=1)
@ketch.concurrent(max_inputs=1000)
async def inc(x: int) -> int:
    return x + 1
