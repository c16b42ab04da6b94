"""An OpenAI-compatible HTTP API over one model: /v1/chat/completions, /v1/completions, /v1/models, /health.

Requests join one running batch (serve/batcher.py: continuous batching, each row with its own sampling
settings and seed); a request never sees another's tokens. The batcher's worker thread hands text deltas
to the event loop, which sends them as server-sent events. The waiting line is bounded: a full one is
answered 429 with Retry-After; a client that hangs up leaves the batch before the next decode step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from tunesmith.errors import TunesmithError
from tunesmith.serve.schemas import ChatRequest, CompletionRequest

MAX_BODY_BYTES = 1_000_000
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")  # as a --host value, or as a Host header names it


def is_loopback(host: str) -> bool:
    """This machine only: 127.0.0.0/8, localhost, ::1."""
    return host in LOOPBACK_NAMES or host.startswith("127.")


DONE = object()  # marks the end of a streamed reply in its event queue
DRAIN_BYTES = 64_000_000  # a body up to this size is read (and dropped) before the 413, so the client sees the answer


def error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": type_, "param": param, "code": code}})


class Engine:
    """One loaded model behind a continuous batcher (serve/batcher.py): `job` turns a request into a batch row."""

    def __init__(
        self,
        model_spec: str,
        name: str | None = None,
        max_prompt_tokens: int | None = None,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        prefix_cache_mb: int = 64,
    ):
        from tunesmith.models import load_pretrained
        from tunesmith.serve.batcher import Batcher, batchable, off_the_main_thread

        loaded = off_the_main_thread(lambda: load_pretrained(model_spec, precision="auto"))
        self.name = name or model_spec
        self.tokenizer, self.model = loaded.tokenizer, loaded.model
        self.model.eval()
        self.max_prompt_tokens = max_prompt_tokens or getattr(self.model.config, "max_position_embeddings", 2048)
        self.batcher = Batcher(
            self.model, self.tokenizer, max_batch=max_batch if batchable(self.model) else 1, max_queue=max_queue, prefix_cache_mb=prefix_cache_mb
        )
        self.created = int(time.time())

    def encode(self, prompt) -> list[int]:
        """The prompt's tokens exactly as generation feeds them (chat template for a message list, raw text otherwise)."""
        from tunesmith.infer.generate import encode_prompt

        ids = encode_prompt(self.tokenizer, prompt, chat=isinstance(prompt, list))
        if not ids:
            raise TunesmithError("the prompt is empty", hint="give at least one character of text to continue")
        return ids

    def job(self, prompt_ids: list[int], prompt, req, on_done, on_delta=None):
        from tunesmith.infer import SamplingParams
        from tunesmith.serve.batcher import Job

        params = SamplingParams(
            temperature=req.temperature,
            top_k=req.top_k or 0,
            top_p=req.top_p,
            min_p=req.min_p or 0.0,
            repetition_penalty=req.repetition_penalty or 1.0,
        )
        return Job(prompt_ids, params, req.new_tokens, on_done, stops=list(req.stop or []), strip=isinstance(prompt, list), seed=req.seed, on_delta=on_delta)


def _settle(future: asyncio.Future, outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def create_app(engine: Engine, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            if api_key is not None:
                sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(sent.encode(), api_key.encode()):
                    return error(401, "invalid or missing API key", "authentication_error", code="invalid_api_key")
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
                if int(length) <= DRAIN_BYTES:
                    # read and drop the body first: answering mid-upload resets the client's connection
                    async for _ in request.stream():
                        pass
                return error(413, f"request body is {length} bytes; the limit is {MAX_BODY_BYTES}")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if p != "body")
        if first["type"] == "json_invalid":
            return error(400, "the request body is not valid JSON")
        if not loc:  # the body as a whole: empty, or JSON that is not an object
            return error(
                400,
                "the request body is empty; send a JSON object"
                if first["type"] == "missing"
                else "the request body must be a JSON object with model and messages (or prompt)",
            )
        return error(400, f"{loc}: {first['msg']}" if loc else first["msg"], param=loc or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 400 and "error parsing the body" in str(exc.detail):  # not UTF-8, or nested too deep to parse
            return error(400, "the request body is not valid JSON (UTF-8, nested at most a few hundred levels deep)")
        return error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else "invalid_request_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, **engine.batcher.load()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": engine.created, "owned_by": "tunesmith"}]}

    def busy(exc) -> JSONResponse:
        response = error(429, f"{exc}; retry in {exc.retry_after} s", "rate_limit_error", code="queue_full")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    async def serve(request: Request, req, prompt, kind: str):
        from tunesmith.serve.batcher import QueueFull

        if req.model != engine.name:
            return error(404, f"model '{req.model}' is not served here; this server has '{engine.name}'", "not_found_error", "model", "model_not_found")
        param = "messages" if kind == "chat" else "prompt"
        try:
            prompt_ids = engine.encode(prompt)
        except TunesmithError as exc:  # bad input found while encoding (an empty prompt, say)
            return error(400, exc.message, param=param)
        if len(prompt_ids) + req.new_tokens > engine.max_prompt_tokens:
            return error(
                400,
                f"the prompt has {len(prompt_ids)} tokens; with max_tokens {req.new_tokens} that exceeds the model's context of {engine.max_prompt_tokens}",
                param=param,
                code="context_length_exceeded",
            )
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        loop = asyncio.get_running_loop()
        if req.stream:
            events: asyncio.Queue = asyncio.Queue()
            job = engine.job(
                prompt_ids,
                prompt,
                req,
                on_done=lambda outcome: loop.call_soon_threadsafe(events.put_nowait, (DONE, outcome)),
                on_delta=lambda delta: loop.call_soon_threadsafe(events.put_nowait, delta),
            )
            try:
                engine.batcher.submit(job)
            except QueueFull as exc:
                return busy(exc)
            return StreamingResponse(stream(req, job, events, kind, rid, created), media_type="text/event-stream")
        finished: asyncio.Future = loop.create_future()
        job = engine.job(prompt_ids, prompt, req, on_done=lambda outcome: loop.call_soon_threadsafe(_settle, finished, outcome))
        try:
            engine.batcher.submit(job)
        except QueueFull as exc:
            return busy(exc)
        while not finished.done():  # a client that hangs up frees its row within a second
            await asyncio.wait({finished}, timeout=1.0)
            if not finished.done() and await request.is_disconnected():
                engine.batcher.cancel(job)
                return error(499, "the client closed the connection", code="client_closed_request")
        result = finished.result()
        if result is None or isinstance(result, BaseException):
            return error(500, f"generation failed: {result or 'cancelled'}", "server_error")
        usage = {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason}
            return {"id": rid, "object": "chat.completion", "created": created, "model": engine.name, "choices": [choice], "usage": usage}
        text = (prompt + result.text) if req.echo else result.text
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": result.finish_reason}
        return {"id": rid, "object": "text_completion", "created": created, "model": engine.name, "choices": [choice], "usage": usage}

    async def stream(req, job, events, kind, rid, created):
        def chunk(delta: str | None, finish=None, first=False):
            if kind == "chat":
                body = {"role": "assistant", "content": ""} if first else ({"content": delta} if delta is not None else {})
                choice = {"index": 0, "delta": body, "finish_reason": finish}
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.name, "choices": [choice]}
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": engine.name,
                "choices": [{"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}],
            }

        try:
            if kind == "chat":
                yield f"data: {json.dumps(chunk(None, first=True))}\n\n"
            while True:
                item = await events.get()
                if isinstance(item, tuple) and item and item[0] is DONE:
                    outcome = item[1]
                    if outcome is None or isinstance(outcome, BaseException):
                        failure = {"message": f"generation failed: {outcome or 'cancelled'}", "type": "server_error", "param": None, "code": None}
                        yield f"data: {json.dumps({'error': failure})}\n\n"
                    else:
                        yield f"data: {json.dumps(chunk(None, finish=outcome.finish_reason))}\n\n"
                        if req.stream_options and req.stream_options.include_usage:  # OpenAI's last chunk: no choices, the usage
                            usage = {
                                "prompt_tokens": outcome.prompt_tokens,
                                "completion_tokens": outcome.completion_tokens,
                                "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
                            }
                            yield f"data: {json.dumps({**chunk(None), 'choices': [], 'usage': usage})}\n\n"
                    break
                yield f"data: {json.dumps(chunk(item))}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # the client went away mid-stream (the generator is closed): its row leaves the batch now
            if not (job.row and job.row.finish):
                engine.batcher.cancel(job)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        return await serve(request, req, [m.model_dump() for m in req.messages], "chat")

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        return await serve(request, req, req.prompt, "completion")

    return app
