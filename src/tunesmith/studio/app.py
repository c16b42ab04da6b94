"""The studio's routes on a FastAPI app (the web stack of `tunesmith serve`): a page at /studio, JSON under /studio/api.

    GET  /studio                       the page (static/index.html, studio.js, studio.css: no build step)
    GET  /studio/api/runs              the runs under the folder, newest first, and the studio's jobs
    GET  /studio/api/run?id=RUN        one run: summary, recipe text, before/after answers, changes, diagnostics, lineage
    GET  /studio/api/metrics?id=RUN&since=N&token=T
                                       metrics.jsonl rows from row N (reset: true when a resume rewrote the file)
    GET  /studio/api/compare?id=A&id=B each run's curves and metrics, side by side
    GET  /studio/api/plot?id=RUN&name=loss.png
                                       a plot the run wrote
    POST /studio/api/chat              {id, messages, temperature, top_k, top_p, max_tokens, seed, system}: the reply as
                                       server-sent events (data: {"delta": ...} ... data: {"done": true, "text": ...})
    POST /studio/api/validate          {recipe}: {ok, stage, ...} or 400 with the CLI's message
    POST /studio/api/launch            {recipe, name?}: start `tunesmith train` on it into <folder>/<name>
    POST /studio/api/stop              {id}: SIGINT to the run's process (checkpoints are kept)
    POST /studio/api/resume            {id}: `tunesmith train --resume` the run
    GET  /studio/api/jobs              the processes the studio started, with the tail of each one's console

With an API key, /studio/api asks for `Authorization: Bearer KEY` as `serve` does (the page asks for the key once).
A POST must be JSON (a form on another site cannot send one without the browser asking first), and when the studio
is bound to loopback a request must name a loopback host (a DNS-rebinding page cannot reach it).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.errors import TunesmithError
from tunesmith.serve.app import error, is_loopback  # one error shape (OpenAI's) and one notion of this machine for both pages
from tunesmith.studio import runs as runs_mod
from tunesmith.studio.launch import Launcher

STATIC = Path(__file__).parent / "static"


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    messages: list[Message] = Field(min_length=1)
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.95
    max_tokens: int = Field(128, ge=1, le=4096)
    seed: int | None = None


class RecipeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    recipe: str
    name: str | None = None


class InspectBody(BaseModel):
    """`tunesmith inspect logits` for a run's model: the next-token table of a prompt."""

    model_config = ConfigDict(extra="ignore")
    id: str
    prompt: str
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.95
    min_p: float = 0.0
    steps: int = Field(1, ge=1, le=16)
    rows: int = Field(10, ge=1, le=50)
    seed: int = 0


class RunBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str


class ChatModels:
    """The model of one run at a time, loaded on first use as `tunesmith chat` loads it; replies one at a time."""

    def __init__(self):
        self.path: str | None = None
        self.loaded = None
        self.lock = threading.Lock()

    def get(self, path: str):
        from tunesmith.models import load_pretrained

        if self.path != path:
            self.loaded, self.path = None, None  # let the previous one go before the next loads (and forget it if this load fails)
            self.loaded = load_pretrained(path, precision="auto")
            self.path = path
        return self.loaded

    def inspect(self, path: str, body: InspectBody) -> list[dict]:
        """The inspector's walk (infer/inspect.walk, what `tunesmith inspect logits --chat` prints) on the run's model."""
        from tunesmith.infer.inspect import walk
        from tunesmith.infer.sampling import SamplingParams

        params = SamplingParams(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, min_p=body.min_p)
        with self.lock:
            loaded = self.get(path)
            return walk(loaded.model, loaded.tokenizer, body.prompt, params, steps=body.steps, rows=body.rows, chat=True, seed=body.seed)

    def reply(self, path: str, body: ChatBody, on_delta) -> str:
        """The reply to the last user message with the rest as history: ChatSession.reply, the code of `tunesmith chat`."""
        from tunesmith.infer.chat import ChatSession
        from tunesmith.infer.sampling import SamplingParams

        messages = [m.model_dump() for m in body.messages]
        system = "\n".join(m["content"] for m in messages if m["role"] == "system") or None
        turns = [m for m in messages if m["role"] != "system"]
        if not turns or turns[-1]["role"] != "user":
            raise TunesmithError("the last message must be the user's", hint="send the conversation so far, ending with the user's message")
        params = SamplingParams(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p)
        with self.lock:
            loaded = self.get(path)
            session = ChatSession(loaded.model, loaded.tokenizer, params, body.max_tokens, system, history=turns[:-1], seed=body.seed)
            return session.reply(turns[-1]["content"], on_delta)


def add_studio(app: FastAPI, root: str | Path, api_key: str | None = None, *, launcher: Launcher | None = None, host: str | None = None) -> FastAPI:
    """Add the studio over the run directories under `root` to `app`. `host`: the address served (loopback: Host is checked)."""
    root = Path(root).resolve()
    launcher = launcher or Launcher(root)
    models = ChatModels()
    app.state.studio_launcher = launcher
    app.state.studio_models = models
    loopback = host is not None and is_loopback(host)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if path.startswith("/studio"):
            if loopback:
                name = urlsplit("//" + (request.headers.get("host") or "")).hostname or ""
                if not is_loopback(name):
                    return error(403, f"the studio answers requests for this machine only, not for host '{name}'", "permission_error")
            origin = request.headers.get("origin")
            if request.method == "POST" and origin and urlsplit(origin).netloc != request.headers.get("host"):
                return error(403, "requests from another site are refused", "permission_error")
        if path.startswith("/studio/api/"):
            if api_key is not None:
                sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(sent.encode(), api_key.encode()):
                    return error(401, "invalid or missing API key", "authentication_error")
            if request.method == "POST" and not request.headers.get("content-type", "").startswith("application/json"):
                return error(415, "send the body as JSON (Content-Type: application/json)")
        return await call_next(request)

    async def parse(request: Request, model: type[BaseModel]):
        try:
            return model.model_validate(json.loads(await request.body() or b"null"))
        except (ValueError, ValidationError) as exc:
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise TunesmithError(f"{loc}: {first['msg']}" if loc else first["msg"]) from None
            raise TunesmithError("the request body is not valid JSON") from None

    def fail(exc: TunesmithError) -> JSONResponse:
        if isinstance(exc, runs_mod.NotFound):
            return error(404, exc.format(), "not_found_error")
        return error(400, exc.format())

    @app.get("/studio", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/studio/static", StaticFiles(directory=STATIC), name="studio-static")

    @app.get("/", include_in_schema=False)
    async def home():
        return RedirectResponse("/studio")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)

    @app.get("/studio/api/runs")
    async def list_runs():
        live = launcher.run_states()
        jobs = launcher.jobs()
        listed = await asyncio.to_thread(runs_mod.scan, root, live)
        known = {r["id"] for r in listed}
        for job in jobs:  # launched, but no run directory yet (loading data and model), or it never came to be
            if job["run"] not in known and job["action"] == "launch":
                listed.insert(
                    0,
                    {
                        "id": job["run"],
                        "name": job["run"],
                        "kind": "train",
                        "stage": None,
                        "status": "starting" if job["alive"] else "failed",
                        "started_ts": job["started"],
                        "metrics": {},
                        "pending": True,
                        "log": launcher.log_tail(job, 1500),
                    },
                )
                known.add(job["run"])
        return {"root": str(root), "runs": listed, "jobs": [{k: v for k, v in j.items() if k != "command"} for j in jobs]}

    @app.get("/studio/api/run")
    async def one_run(id: str):
        try:
            info = await asyncio.to_thread(runs_mod.details, root, id, launcher.run_states())
        except TunesmithError as exc:
            return fail(exc)
        job = next((j for j in reversed(launcher.jobs()) if j["run"] == id), None)
        info["job"] = job and {**{k: v for k, v in job.items() if k != "command"}, "log": launcher.log_tail(job)}
        return info

    @app.get("/studio/api/metrics")
    async def metrics(id: str, since: int = 0, token: str | None = None):
        try:
            return await asyncio.to_thread(runs_mod.metrics_since, root, id, since, token)
        except TunesmithError as exc:
            return fail(exc)

    @app.get("/studio/api/compare")
    async def compare(id: list[str] = Query(default=[])):
        if len(id) < 2:
            return error(400, "compare takes two or more runs: ?id=A&id=B")
        try:
            return await asyncio.to_thread(runs_mod.compare, root, id, launcher.run_states())
        except TunesmithError as exc:
            return fail(exc)

    @app.get("/studio/api/plot")
    async def plot(id: str, name: str):
        try:
            path = runs_mod.resolve(root, id)
        except TunesmithError as exc:
            return fail(exc)
        file = path / name
        if "/" in name or not name.endswith(".png") or not file.is_file():
            return error(404, f"run '{id}' has no plot '{name}'", "not_found_error")
        return FileResponse(file, media_type="image/png")

    @app.post("/studio/api/chat")
    async def chat(request: Request):
        try:
            body = await parse(request, ChatBody)
            path = runs_mod.resolve(root, body.id)
            from tunesmith.infer.sampling import SamplingParams

            SamplingParams(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p)  # bad settings: a 400 now, not mid-stream
        except TunesmithError as exc:
            return fail(exc)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def work():
            try:
                text = models.reply(str(path), body, lambda d: loop.call_soon_threadsafe(events.put_nowait, {"delta": d}))
                loop.call_soon_threadsafe(events.put_nowait, {"done": True, "text": text})
            except TunesmithError as exc:
                loop.call_soon_threadsafe(events.put_nowait, {"error": exc.format()})
            except Exception as exc:  # noqa: BLE001 - the page shows it; the studio keeps serving
                loop.call_soon_threadsafe(events.put_nowait, {"error": f"generation failed: {type(exc).__name__}: {exc}"})

        threading.Thread(target=work, daemon=True).start()

        async def stream():
            while True:
                event = await events.get()
                yield f"data: {json.dumps(event)}\n\n"
                if "done" in event or "error" in event:
                    break

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/studio/api/inspect")
    async def inspect_logits(request: Request):
        try:
            body = await parse(request, InspectBody)
            path = runs_mod.resolve(root, body.id)
            return {"steps": await asyncio.to_thread(models.inspect, str(path), body)}
        except TunesmithError as exc:
            return fail(exc)

    @app.get("/studio/api/plan")
    async def plan(id: str):
        """The plan of the run's recipe, as `tunesmith plan -c <run>/recipe.yaml --json` gives it."""
        try:
            path = runs_mod.resolve(root, id)
            if not (path / "recipe.yaml").is_file():
                return error(404, f"'{id}' has no recipe.yaml (a merge or an export has no training plan)", "not_found_error")

            def make():
                from tunesmith.recipes import load_recipe
                from tunesmith.train.plan import make_plan

                return make_plan(load_recipe(path / "recipe.yaml")).to_json()

            return await asyncio.to_thread(make)
        except TunesmithError as exc:
            return fail(exc)

    @app.get("/studio/api/rollouts")
    async def rollouts(id: str, step: int | None = None):
        """An RL run's sampled batch (rollouts.jsonl): the one step `step` trained on, else the newest."""
        try:
            return await asyncio.to_thread(runs_mod.rollouts, root, id, step)
        except TunesmithError as exc:
            return fail(exc)

    @app.post("/studio/api/validate")
    async def validate(request: Request):
        try:
            body = await parse(request, RecipeBody)
            recipe, _ = await asyncio.to_thread(launcher.validate, body.recipe)
        except TunesmithError as exc:
            return fail(exc)
        return {
            "ok": True,
            "stage": recipe.stage,
            "method": recipe.method,
            "model": recipe.model.name,
            "dataset": recipe.data.dataset,
            "message": f"valid: stage {recipe.stage} ({recipe.method}) of {recipe.model.name} on {recipe.data.dataset}",
        }

    @app.post("/studio/api/launch")
    async def launch(request: Request):
        try:
            body = await parse(request, RecipeBody)
            job = await asyncio.to_thread(launcher.launch, body.recipe, body.name or None)
        except TunesmithError as exc:
            return fail(exc)
        return {k: v for k, v in job.items() if k != "command"}

    @app.post("/studio/api/stop")
    async def stop(request: Request):
        try:
            body = await parse(request, RunBody)
            job = launcher.stop(body.id)
        except TunesmithError as exc:
            return fail(exc)
        return {
            "stopping": body.id,
            "pid": job["pid"],
            "message": f"interrupting {body.id} (pid {job['pid']}) as Ctrl-C would; the checkpoints written so far are kept: resume continues from the newest",
        }

    @app.post("/studio/api/resume")
    async def resume(request: Request):
        try:
            body = await parse(request, RunBody)
            job = await asyncio.to_thread(launcher.resume, body.id)
        except TunesmithError as exc:
            return fail(exc)
        return {k: v for k, v in job.items() if k != "command"}

    @app.get("/studio/api/jobs")
    async def jobs():
        return {"jobs": [{**{k: v for k, v in j.items() if k != "command"}, "log": launcher.log_tail(j, 2000)} for j in launcher.jobs()]}

    return app


def create_studio_app(root: str | Path, api_key: str | None = None, *, launcher: Launcher | None = None, host: str | None = None) -> FastAPI:
    """A FastAPI app with only the studio (what `tunesmith studio` serves)."""
    app = FastAPI(title="tunesmith studio", docs_url=None, redoc_url=None)
    return add_studio(app, root, api_key, launcher=launcher, host=host)
