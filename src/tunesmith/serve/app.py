"""An OpenAI-compatible HTTP API over one model: /v1/chat/completions, /v1/completions, /v1/models, /health.

Requests are queued (one generation at a time on a lock): a CPU runs one batch well, and a
request never sees another's tokens. Streaming runs generation in a worker thread that hands
text deltas to the event loop, which sends them as server-sent events.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from tunesmith.errors import TunesmithError
from tunesmith.serve.schemas import ChatRequest, CompletionRequest

MAX_BODY_BYTES = 1_000_000
DRAIN_BYTES = 64_000_000  # a body up to this size is read (and dropped) before the 413, so the client sees the answer


def error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": type_, "param": param, "code": code}})


class Engine:
    """One loaded model; `run` generates for one request, serialised by a lock."""

    def __init__(self, model_spec: str, name: str | None = None, max_prompt_tokens: int | None = None):
        from tunesmith.models import load_pretrained

        loaded = load_pretrained(model_spec, precision="auto")
        self.name = name or model_spec
        self.tokenizer, self.model = loaded.tokenizer, loaded.model
        self.model.eval()
        self.max_prompt_tokens = max_prompt_tokens or getattr(self.model.config, "max_position_embeddings", 2048)
        self.lock = threading.Lock()
        self.created = int(time.time())

    def prompt_tokens(self, prompt) -> int:
        """The prompt's length exactly as generation will encode it (chat template included)."""
        from tunesmith.infer.generate import encode_prompt

        return len(encode_prompt(self.tokenizer, prompt, chat=isinstance(prompt, list)))

    def run(self, prompt, req, on_delta=None):
        """Generate for a chat (list of messages) or a raw prompt; returns a Completion."""
        from tunesmith.infer import SamplingParams, complete

        params = SamplingParams(
            temperature=req.temperature,
            top_k=req.top_k or 0,
            top_p=req.top_p,
            min_p=req.min_p or 0.0,
            repetition_penalty=req.repetition_penalty or 1.0,
        )
        with self.lock:
            return complete(
                self.model, self.tokenizer, [prompt], params,
                chat=isinstance(prompt, list), max_new_tokens=req.new_tokens, stop=req.stop, seed=req.seed,
                on_token=(lambda i, delta: on_delta(delta)) if on_delta else None,
            )[0]


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
        return error(400, f"{loc}: {first['msg']}" if loc else first["msg"], param=loc or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else "invalid_request_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": engine.created, "owned_by": "tunesmith"}]}

    async def serve(req, prompt, kind: str):
        if req.model != engine.name:
            return error(404, f"model '{req.model}' is not served here; this server has '{engine.name}'", "not_found_error", "model", "model_not_found")
        n_prompt = engine.prompt_tokens(prompt)
        if n_prompt + req.new_tokens > engine.max_prompt_tokens:
            return error(400, f"the prompt has {n_prompt} tokens; with max_tokens {req.new_tokens} that exceeds the model's context of {engine.max_prompt_tokens}", param="messages" if kind == "chat" else "prompt", code="context_length_exceeded")
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if req.stream:
            return StreamingResponse(stream(req, prompt, kind, rid, created), media_type="text/event-stream")
        try:
            result = await asyncio.to_thread(engine.run, prompt, req)
        except TunesmithError as exc:  # bad input found while encoding (an empty prompt, say)
            return error(400, str(exc), param="messages" if kind == "chat" else "prompt")
        usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens, "total_tokens": result.prompt_tokens + result.completion_tokens}
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason}
            return {"id": rid, "object": "chat.completion", "created": created, "model": engine.name, "choices": [choice], "usage": usage}
        text = (prompt + result.text) if req.echo else result.text
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": result.finish_reason}
        return {"id": rid, "object": "text_completion", "created": created, "model": engine.name, "choices": [choice], "usage": usage}

    async def stream(req, prompt, kind, rid, created):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def work():
            try:
                result = engine.run(prompt, req, on_delta=lambda d: loop.call_soon_threadsafe(queue.put_nowait, d))
                loop.call_soon_threadsafe(queue.put_nowait, (done, result))
            except Exception as exc:  # surfaced to the client as an error event
                loop.call_soon_threadsafe(queue.put_nowait, (done, exc))

        def chunk(delta: str | None, finish=None, first=False):
            if kind == "chat":
                body = {"role": "assistant", "content": ""} if first else ({"content": delta} if delta is not None else {})
                choice = {"index": 0, "delta": body, "finish_reason": finish}
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.name, "choices": [choice]}
            return {"id": rid, "object": "text_completion", "created": created, "model": engine.name, "choices": [{"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}]}

        threading.Thread(target=work, daemon=True).start()
        if kind == "chat":
            yield f"data: {json.dumps(chunk(None, first=True))}\n\n"
        while True:
            item = await queue.get()
            if isinstance(item, tuple) and item and item[0] is done:
                outcome = item[1]
                if isinstance(outcome, Exception):
                    yield f"data: {json.dumps({'error': {'message': str(outcome), 'type': 'server_error', 'param': None, 'code': None}})}\n\n"
                else:
                    yield f"data: {json.dumps(chunk(None, finish=outcome.finish_reason))}\n\n"
                break
            yield f"data: {json.dumps(chunk(item))}\n\n"
        yield "data: [DONE]\n\n"

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        return await serve(req, [m.model_dump() for m in req.messages], "chat")

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        return await serve(req, req.prompt, "completion")

    return app
