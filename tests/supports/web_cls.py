"""A parametrized class with a web method: parameters come from the query string."""

import ketch
from supports import ident

app = ketch.App("web-cls")


@app.cls()
class Greeter:
    greeting: str = ketch.parameter(default="hello")
    times: int = ketch.parameter(default=1)

    @ketch.enter()
    def setup(self) -> None:
        self.pid = ident.me()  # by `supports.ident`: a sandboxed pid is not unique

    @ketch.fastapi_endpoint()
    def greet(self, name: str) -> dict[str, object]:
        return {"msg": " ".join([f"{self.greeting} {name}"] * self.times), "pid": self.pid}

    @ketch.method()
    def plain(self) -> str:
        return self.greeting
