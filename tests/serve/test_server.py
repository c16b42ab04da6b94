"""The server with the official openai client, concurrent requests, and every bad-input path."""

import json
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    import uvicorn

    from tunesmith.serve import Engine, create_app

    engine = Engine(tiny_model_dir, name="tiny", max_prompt_tokens=256)
    port = free_port()
    config = uvicorn.Config(create_app(engine, api_key="sekret"), host="127.0.0.1", port=port, log_level="error")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", engine
    srv.should_exit = True
    thread.join(5)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="sekret", max_retries=0)


def raw(server, path, body: bytes | None, key="sekret", method="POST"):
    req = urllib.request.Request(server[0] + path, data=body, method=method, headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_chat_and_completion_with_openai_client(client, server):
    from tunesmith.infer import generate

    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason in ("stop", "length") and chat.usage.completion_tokens <= 8
    engine = server[1]
    assert chat.choices[0].message.content == generate(engine.model, engine.tokenizer, ["hello"], max_new_tokens=8)[0]
    comp = client.completions.create(model="tiny", prompt="Once upon", max_tokens=5, temperature=0)
    assert comp.object == "text_completion" and comp.usage.prompt_tokens > 0
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_streaming_equals_non_streaming(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "tell me"}], max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].text for c in client.completions.create(model="tiny", prompt="abc", max_tokens=6, temperature=0, stream=True))
    assert text == client.completions.create(model="tiny", prompt="abc", max_tokens=6, temperature=0).choices[0].text


def test_concurrent_requests_get_their_own_tokens(client):
    prompts = [f"question number {i}" for i in range(6)]

    def ask(p):
        return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": p}], max_tokens=10, temperature=0.9, seed=7).choices[0].message.content

    sequential = [ask(p) for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(ask, prompts))
    assert concurrent == sequential


def test_same_seed_same_output(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=10, temperature=1.0, seed=3)
    assert client.chat.completions.create(**kwargs).choices[0].message.content == client.chat.completions.create(**kwargs).choices[0].message.content


@pytest.mark.parametrize(
    "body,status,needle",
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "not served here"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}).encode(), 400, "max_tokens"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9}).encode(), 400, "max_tokens"),
        (json.dumps({"model": "tiny", "messages": "hello"}).encode(), 400, "messages"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).encode(), 400, "temperature"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "word " * 400}]}).encode(), 400, "context"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "word " * 400}], "stream": True}).encode(), 400, "context"),
        (json.dumps({"model": "tiny", "prompt": "x" * 2_000_000}).encode(), 413, "limit"),
    ],
    ids=["malformed", "unknown-model", "negative-max", "huge-max", "wrong-type", "bad-temperature", "too-long-prompt", "too-long-streamed", "oversized-body"],
)
def test_bad_input_gets_openai_shaped_4xx_and_server_keeps_serving(server, client, body, status, needle):
    path = "/v1/completions" if b'"prompt"' in body[:40] else "/v1/chat/completions"
    code, payload = raw(server, path, body)
    assert code == status, payload
    assert set(payload["error"]) == {"message", "type", "param", "code"} and needle in payload["error"]["message"]
    assert client.models.list().data  # still serving


def test_api_key_is_required(server):
    code, payload = raw(server, "/v1/models", None, key="wrong", method="GET")
    assert code == 401 and payload["error"]["type"] == "authentication_error"
    with urllib.request.urlopen(server[0] + "/health") as resp:
        assert json.loads(resp.read())["status"] == "ok"
