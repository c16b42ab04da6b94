"""The chat session (history, slash commands) and `tunesmith chat` driven through a pipe."""

from typer.testing import CliRunner

from tunesmith.cli.main import _register, app
from tunesmith.infer import SamplingParams, complete
from tunesmith.infer.chat import ChatSession
from tunesmith.models import load_model, load_tokenizer

_register()
runner = CliRunner()


def test_session_keeps_history_and_streams(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    s = ChatSession(model, tok, SamplingParams(temperature=0), max_new_tokens=4, system="be kind")
    streamed = []
    kind, first = s.handle("one", on_delta=streamed.append)
    assert kind == "reply" and "".join(streamed) == first
    s.handle("two")
    assert [m["role"] for m in s.history] == ["user", "assistant", "user", "assistant"]
    # the second reply saw the system prompt and the first exchange
    expected = complete(model, tok, [[{"role": "system", "content": "be kind"}, *s.history[:3]]], max_new_tokens=4)[0].text
    assert s.history[3]["content"] == expected
    assert s.handle("/reset") == ("info", "history cleared") and s.history == []


def test_session_commands(tiny_model_dir):
    s = ChatSession(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), max_new_tokens=3)
    assert s.handle("/temperature 0.2") == ("info", "temperature = 0.2") and s.params.temperature == 0.2
    assert s.handle("/top_k 50")[1] == "top_k = 50" and s.handle("/top_p 0.9")[1] == "top_p = 0.9" and s.handle("/min_p 0.05")[1] == "min_p = 0.05"
    assert s.handle("/top_p 2")[1].startswith("/top_p '2' rejected: top_p is 2.0")
    assert s.handle("/top_k many")[1].startswith("/top_k 'many' rejected")
    assert s.handle("/system You are terse.")[1].startswith("system prompt set") and s.system == "You are terse."
    assert s.handle("/frobnicate")[1].startswith("unknown command /frobnicate")
    assert s.handle("   ") == ("info", None) and s.handle("/exit")[0] == "exit"


def test_chat_through_a_pipe(tiny_model_dir):
    result = runner.invoke(app, ["chat", "-m", tiny_model_dir, "--max-new-tokens", "5"], input="hello\n/temperature 0\n/top_k 5\n/reset\nagain\n/exit\nnever\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("assistant> ") == 2
    assert "temperature = 0.0" in result.output and "top_k = 5" in result.output and "history cleared" in result.output


def test_chat_ends_at_end_of_input(tiny_model_dir):
    result = runner.invoke(app, ["chat", "-m", tiny_model_dir, "--max-new-tokens", "3", "--temperature", "0"], input="hi\n")
    assert result.exit_code == 0 and result.output.count("assistant> ") == 1
