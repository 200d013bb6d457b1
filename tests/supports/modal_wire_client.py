"""A plain Python process using the official SDK against ketch (MODAL_SERVER_URL set), for
tests/integration/test_modal_wire.py. One JSON line out per command:

  greet NAME            Function.from_name("wire-deployed", "greet").remote(NAME)
  spawn PATH            .spawn(PATH) of wait_for; prints the call id
  get CALL_ID TIMEOUT   FunctionCall.from_id(CALL_ID).get(timeout=TIMEOUT)
"""

import json
import sys

import modal


def main(argv: list[str]) -> dict[str, str]:
    try:
        if argv[0] == "greet":
            fn = modal.Function.from_name("wire-deployed", "greet")
            return {"result": fn.remote(argv[1])}
        if argv[0] == "spawn":
            fn = modal.Function.from_name("wire-deployed", "wait_for")
            return {"call_id": fn.spawn(argv[1]).object_id}
        call = modal.FunctionCall.from_id(argv[1])
        return {"result": call.get(timeout=float(argv[2]))}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
