"""The server with the official openai client, concurrent requests, and every bad-input path."""

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tiny_model_dir, serve_in_thread):
    from tunesmith.serve import Engine, create_app

    engine = Engine(tiny_model_dir, name="tiny", max_prompt_tokens=256)
    with serve_in_thread(create_app(engine, api_key="sekret")) as port:
        yield f"http://127.0.0.1:{port}", engine


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
        return (
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": p}], max_tokens=10, temperature=0.9, seed=7)
            .choices[0]
            .message.content
        )

    sequential = [ask(p) for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(ask, prompts))
    assert concurrent == sequential


def test_same_seed_same_output(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=10, temperature=1.0, seed=3)
    assert client.chat.completions.create(**kwargs).choices[0].message.content == client.chat.completions.create(**kwargs).choices[0].message.content


def chat(**fields):
    return json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], **fields}).encode()


def comp(**fields):
    return json.dumps({"model": "tiny", "prompt": "x", **fields}).encode()


BAD_REQUESTS = {  # id: (path, body, status, a phrase of the message)
    "malformed": ("chat", b"{not json", 400, "not valid JSON"),
    "not-utf8": ("chat", b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "not valid JSON"),
    "deeply-nested": ("chat", b'{"model": "tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, ""),
    "json-array": ("chat", b"[]", 400, ""),
    "json-string": ("chat", b'"hello"', 400, ""),
    "json-null": ("chat", b"null", 400, ""),
    "empty-body": ("chat", b"", 400, ""),
    "unknown-model": ("chat", chat(model="gpt-4"), 404, "not served here"),
    "no-model": ("chat", json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
    "negative-max": ("chat", chat(max_tokens=-1), 400, "max_tokens"),
    "zero-max-completion": ("chat", chat(max_completion_tokens=0), 400, "max_completion_tokens"),
    "huge-max": ("chat", chat(max_tokens=10**9), 400, "max_tokens"),
    "messages-a-string": ("chat", json.dumps({"model": "tiny", "messages": "hello"}).encode(), 400, "messages"),
    "messages-empty": ("chat", json.dumps({"model": "tiny", "messages": []}).encode(), 400, "messages"),
    "messages-of-strings": ("chat", json.dumps({"model": "tiny", "messages": ["hi"]}).encode(), 400, "messages"),
    "bad-role": ("chat", json.dumps({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}).encode(), 400, "role"),
    "no-role": ("chat", json.dumps({"model": "tiny", "messages": [{"content": "x"}]}).encode(), 400, "role"),
    "content-a-number": ("chat", json.dumps({"model": "tiny", "messages": [{"role": "user", "content": 5}]}).encode(), 400, "content"),
    "no-content": ("chat", json.dumps({"model": "tiny", "messages": [{"role": "user"}]}).encode(), 400, "content"),
    "bad-temperature": ("chat", chat(temperature="hot"), 400, "temperature"),
    "negative-temperature": ("chat", chat(temperature=-1), 400, "temperature"),
    "temperature-too-high": ("chat", chat(temperature=3), 400, "temperature"),
    "top-p-zero": ("chat", chat(top_p=0), 400, "top_p"),
    "top-p-above-one": ("chat", chat(top_p=1.5), 400, "top_p"),
    "negative-top-k": ("chat", chat(top_k=-1), 400, "top_k"),
    "min-p-above-one": ("chat", chat(min_p=2), 400, "min_p"),
    "zero-repetition-penalty": ("chat", chat(repetition_penalty=0), 400, "repetition_penalty"),
    "n-two": ("chat", chat(n=2), 400, "n"),
    "five-stops": ("chat", chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    "empty-stop": ("chat", chat(stop=[""]), 400, "stop"),
    "stop-a-number": ("chat", chat(stop=7), 400, "stop"),
    "seed-a-word": ("chat", chat(seed="abc"), 400, "seed"),
    "stream-a-list": ("chat", chat(stream=[1]), 400, "stream"),
    "too-long-prompt": ("chat", json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "word " * 400}]}).encode(), 400, "context"),
    "too-long-streamed": (
        "chat",
        json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "word " * 400}], "stream": True}).encode(),
        400,
        "context",
    ),
    "prompt-too-long-with-max-tokens": ("completions", comp(prompt="word " * 200, max_tokens=200), 400, "context"),
    "oversized-body": ("completions", json.dumps({"model": "tiny", "prompt": "x" * 2_000_000}).encode(), 413, "limit"),
    "no-prompt": ("completions", json.dumps({"model": "tiny"}).encode(), 400, "prompt"),
    "prompt-a-list": ("completions", comp(prompt=[1, 2, 3]), 400, "prompt"),
    "empty-prompt": ("completions", comp(prompt=""), 400, "empty"),
    "echo-a-list": ("completions", comp(echo=[True]), 400, "echo"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_input_gets_openai_shaped_4xx_and_server_keeps_serving(server, client, case):
    where, body, status, needle = BAD_REQUESTS[case]
    code, payload = raw(server, f"/v1/{'chat/completions' if where == 'chat' else 'completions'}", body)
    assert code == status, payload
    assert set(payload["error"]) == {"message", "type", "param", "code"} and needle in payload["error"]["message"]
    assert client.models.list().data  # still serving


def test_wrong_method_and_unknown_path_are_openai_shaped(server):
    for path, method, status in (("/v1/chat/completions", "GET", 405), ("/v1/nope", "POST", 404)):
        code, payload = raw(server, path, b"{}" if method == "POST" else None, method=method)
        assert code == status and set(payload["error"]) == {"message", "type", "param", "code"}


def test_bad_requests_number_at_least_thirty():
    assert len(BAD_REQUESTS) >= 30


def test_api_key_is_required(server):
    code, payload = raw(server, "/v1/models", None, key="wrong", method="GET")
    assert code == 401 and payload["error"]["type"] == "authentication_error"
    with urllib.request.urlopen(server[0] + "/health") as resp:
        assert json.loads(resp.read())["status"] == "ok"
