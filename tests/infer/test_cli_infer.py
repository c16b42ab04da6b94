import json

from typer.testing import CliRunner

from tunesmith.cli.main import _register, app

_register()
runner = CliRunner()


def test_generate_batch_file_to_jsonl(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"messages": [{"role": "user", "content": "yo"}]}) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["generate", "-m", tiny_model_dir, "--prompts-file", str(prompts), "-o", str(out), "--max-new-tokens", "4", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["finish_reason"] in ("stop", "length") and r["completion_tokens"] <= 4 for r in rows)


def test_generate_bad_file_names_the_line(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n{oops\n")
    from tunesmith.errors import TunesmithError

    result = runner.invoke(app, ["generate", "-m", tiny_model_dir, "--prompts-file", str(prompts)])
    assert isinstance(result.exception, TunesmithError) and f"{prompts}:2: not valid JSON" in str(result.exception)


def test_chat_through_a_pipe(tiny_model_dir):
    result = runner.invoke(app, ["chat", "-m", tiny_model_dir, "--max-new-tokens", "5"], input="hello\n/temperature 0\n/top_k 5\n/reset\nagain\n/exit\nnever\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("assistant> ") == 2
    assert "temperature = 0.0" in result.output and "top_k = 5" in result.output and "history cleared" in result.output


def test_chat_session_keeps_history(tiny_model_dir):
    from tunesmith.infer.chat import ChatSession
    from tunesmith.models import load_model, load_tokenizer

    s = ChatSession(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), max_new_tokens=3)
    s.handle("one")
    s.handle("two")
    assert [m["role"] for m in s.history] == ["user", "assistant", "user", "assistant"]
    assert s.handle("/top_p 2")[1].startswith("/top_p '2' rejected")
    assert s.handle("/exit")[0] == "exit"


def test_inspect_logits_json(tiny_model_dir):
    result = runner.invoke(app, ["inspect", "logits", "-m", tiny_model_dir, "-p", "Shanghai is in", "--top-k", "3", "--rows", "4", "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)
    assert len(steps) == 2 and len(steps[0]["tokens"]) == 4 and steps[0]["kept"]["top_k"] == 3
    assert sum(t["p_final"] for t in steps[0]["tokens"]) == __import__("pytest").approx(1.0, abs=1e-5)
