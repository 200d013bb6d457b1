"""Background jobs: spawn a call, keep only its id, and poll for the result later.

ketch run examples/spawn_poll.py --a 2 --b 3
"""

import time

import ketch

app = ketch.App("spawn-poll")


@app.function()
def slow_add(a: int, b: int, delay: float = 0.5) -> int:
    time.sleep(delay)
    return a + b


@app.local_entrypoint()
def main(a: int = 2, b: int = 3) -> None:
    call = slow_add.spawn(a, b)
    print("spawned", call.object_id)
    # The id is all that another process (a web handler, a cron job) needs to find the call.
    same_call = ketch.FunctionCall.from_id(call.object_id)
    while True:
        try:
            result = same_call.get(timeout=0)  # poll: raises TimeoutError until it is done
            break
        except TimeoutError:
            print("not ready yet")
            time.sleep(0.2)
    print("result", result)
