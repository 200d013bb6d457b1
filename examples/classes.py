"""Classes: per-instance parameters, an @enter hook that runs once per container, methods.

ketch run examples/classes.py --name Ada
"""

import os

import ketch

app = ketch.App("classes")


@app.cls()
class Greeter:
    greeting: str = ketch.parameter(default="Hello")

    @ketch.enter()
    def load(self) -> None:
        # Expensive set-up (loading a model, opening a pool) goes here, once per container.
        self.container_pid = os.getpid()

    @ketch.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}!"


@app.local_entrypoint()
def main(name: str = "world") -> None:
    print(Greeter().greet.remote(name))
    # Another parameter set is another pool of containers.
    print(Greeter(greeting="Bonjour").greet.remote(name))
