"""RPCs of calls: the client's side (map, put inputs, get outputs) and the container's
(hello, heartbeat, get inputs, put outputs)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ketch._modal_wire.apps import missing
from ketch._modal_wire.servicer import Ctx, Handlers
from ketch._modal_wire.state import PendingInput, WireCall, WireFunction, new_id

if TYPE_CHECKING:
    from ketch._modal_wire.core import Wire

_MAX_OUTPUT_WAIT = 55.0
# A container's poll for inputs is answered empty after this long; it asks again.
_INPUT_WAIT = 5.0
_MAX_OUTPUTS = 1000
# Modal's default scaledown_window: an idle container stays this long for the next input.
_SCALEDOWN_WINDOW = 60


def register(wire: Wire, handlers: Handlers) -> None:
    pb2 = wire.pb2
    empty = wire.empty

    def function(function_id: str) -> WireFunction:
        fn = wire.functions.get(function_id)
        if fn is None or fn.definition is None:
            raise missing("function", function_id)
        return fn

    def call(call_id: str) -> WireCall:
        found = wire.calls.get(call_id)
        if found is None:
            raise missing("function call", call_id)
        return found

    def enqueue(fn: WireFunction, fc: WireCall, items: Any) -> list[Any]:
        answers = []
        for item in items:
            pending = PendingInput(new_id("in"), fc.call_id, fc.next_idx, item.input)
            fc.next_idx += 1
            fc.inputs[pending.input_id] = pending
            fn.push(pending)
            answers.append(
                pb2.FunctionPutInputsResponseItem(
                    idx=item.idx, input_id=pending.input_id, input_jwt=pending.input_id
                )
            )
        wire.ensure_containers(fn)
        return answers

    async def function_map(req: Any, ctx: Ctx) -> Any:
        fn = function(req.function_id)
        fc = WireCall(new_id("fc"), fn.function_id, req.function_call_type)
        wire.calls[fc.call_id] = fc
        answers = enqueue(fn, fc, req.pipelined_inputs)
        policy = fn.definition.retry_policy
        return pb2.FunctionMapResponse(
            function_call_id=fc.call_id,
            function_call_jwt=fc.call_id,
            pipelined_inputs=answers,
            retry_policy=policy,
            # retries= are the client's to drive (FunctionRetryInputs), as with Modal.
            sync_client_retries_enabled=True,
            max_inputs_outstanding=1000,
        )

    async def function_put_inputs(req: Any, ctx: Ctx) -> Any:
        fn = function(req.function_id)
        fc = call(req.function_call_id)
        return pb2.FunctionPutInputsResponse(inputs=enqueue(fn, fc, req.inputs))

    async def function_get_outputs(req: Any, ctx: Ctx) -> Any:
        fc = call(req.function_call_id)
        # A range (both ends included) asks for outputs by index whatever was read before;
        # otherwise the poll resumes after the last entry it saw.
        ranged = req.HasField("start_idx") or req.HasField("end_idx")
        low = req.start_idx if req.HasField("start_idx") else 0
        high = req.end_idx if req.HasField("end_idx") else 1 << 62
        after = 0 if ranged else _entry_number(req.last_entry_id)
        deadline = time.monotonic() + min(max(req.timeout, 0.0), _MAX_OUTPUT_WAIT)
        while True:
            if ranged:
                found = [o for o in fc.outputs if low <= o.idx <= high]
            else:
                found = fc.outputs[after:]
            if found or time.monotonic() >= deadline:
                break
            await fc.signal.wait(deadline - time.monotonic())
        if req.input_jwts:
            wanted = set(req.input_jwts)
            found = [o for o in found if o.input_id in wanted]
        found = found[: req.max_values or _MAX_OUTPUTS]
        if req.clear_on_success and ranged and found:
            # A single call's caller has its output: a retry's output is the next one.
            taken = {id(o) for o in found}
            fc.outputs = [o for o in fc.outputs if id(o) not in taken]
        response = pb2.FunctionGetOutputsResponse(
            outputs=found,
            last_entry_id=f"{after + len(found)}-0",
            num_unfinished_inputs=fc.unfinished,
        )
        if req.clear_on_success and fc.unfinished == 0 and not found:
            wire.calls.pop(fc.call_id, None)
        return response

    async def container_hello(req: Any, ctx: Ctx) -> Any:
        wire.container(ctx).hello = True
        return empty()

    async def container_heartbeat(req: Any, ctx: Ctx) -> Any:
        wire.container(ctx)
        return pb2.ContainerHeartbeatResponse()

    async def function_get_inputs(req: Any, ctx: Ctx) -> Any:
        container = wire.container(ctx)
        fn = wire.functions[container.function_id]
        deadline = time.monotonic() + _INPUT_WAIT
        while not fn.queue and not container.stopping and time.monotonic() < deadline:
            await fn.queue_signal.wait(deadline - time.monotonic())
        window = fn.definition.task_idle_timeout_secs or _SCALEDOWN_WINDOW
        if not fn.queue and not container.running:
            # Idle past its function's scaledown window: the container goes.
            container.stopping |= time.monotonic() - container.idle_since > window
        if container.stopping:
            return pb2.FunctionGetInputsResponse(
                inputs=[pb2.FunctionGetInputsItem(kill_switch=True)]
            )
        inputs: list[Any] = []
        limit = max(1, req.batch_max_size or 1)
        while fn.queue and len(inputs) < limit:
            pending = fn.queue.popleft()
            fc = wire.calls.get(pending.call_id)
            if fc is None:
                continue  # its caller is gone
            container.running[pending.input_id] = pending
            container.took_input = True
            # timeout= counts execution only, from the moment a container takes the input.
            timeout = fn.definition.timeout_secs
            pending.deadline = time.monotonic() + timeout if timeout else 0.0
            inputs.append(
                pb2.FunctionGetInputsItem(
                    input_id=pending.input_id,
                    input=pending.item,
                    function_call_id=pending.call_id,
                    retry_count=pending.retry_count,
                    function_map_idx=pending.idx,
                    function_call_invocation_type=pb2.FUNCTION_CALL_INVOCATION_TYPE_SYNC,
                )
            )
        return pb2.FunctionGetInputsResponse(inputs=inputs)

    async def function_put_outputs(req: Any, ctx: Ctx) -> Any:
        container = wire.container(ctx)
        for out in req.outputs:
            pending = container.running.pop(out.input_id, None)
            if pending is None:
                continue  # not an input this container holds
            if not container.running:
                container.idle_since = time.monotonic()
            wire.finish(
                pending,
                out.result,
                container.task_id,
                data_format=out.data_format,
                input_started_at=out.input_started_at,
                output_created_at=out.output_created_at,
                retry_count=out.retry_count,
            )
        return empty()

    async def function_retry_inputs(req: Any, ctx: Ctx) -> Any:
        fc = call(req.function_call_jwt)
        fn = function(fc.function_id)
        jwts = []
        for item in req.inputs:
            pending = fc.inputs.get(item.input_jwt)
            if pending is None:
                raise missing("input", item.input_jwt)
            fc.finished.discard(pending.input_id)
            pending.retry_count += 1
            pending.item = item.input
            fn.push(pending)
            jwts.append(pending.input_id)
        wire.ensure_containers(fn)
        return pb2.FunctionRetryInputsResponse(input_jwts=jwts)

    async def function_call_from_id(req: Any, ctx: Ctx) -> Any:
        fc = call(req.function_call_id)
        return pb2.FunctionCallFromIdResponse(
            function_call_id=fc.call_id, num_inputs=len(fc.inputs)
        )

    handlers.unary.update(
        FunctionCallFromId=function_call_from_id,
        FunctionRetryInputs=function_retry_inputs,
        FunctionMap=function_map,
        FunctionPutInputs=function_put_inputs,
        FunctionGetOutputs=function_get_outputs,
        ContainerHello=container_hello,
        ContainerHeartbeat=container_heartbeat,
        FunctionGetInputs=function_get_inputs,
        FunctionPutOutputs=function_put_outputs,
    )


def _entry_number(text: str) -> int:
    head = text.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def container_only(ctx: Ctx) -> str:
    if ctx.task_id is None:
        raise GRPCError(Status.PERMISSION_DENIED, "this RPC is for containers only")
    return ctx.task_id
