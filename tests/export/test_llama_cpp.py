"""llama.cpp (llama-cpp-python) as the client of our GGUF files: every family's tiny model, the embedded SmolLM2 and a
LoRA-tuned run load there, tokenize like transformers on ~50 strings, render the same chat prompts from the template
stored in the file, decode the same greedy tokens as `tunesmith generate` (fp32), and stop where tunesmith stops.

Skipped with the reason where llama-cpp-python is missing or was built for another CPU (make setup-dev builds it).
"""

from __future__ import annotations

import pytest
from families import FAMILIES, as_llama_cpp_runs_gemma3

from tunesmith.export.gguf import write_gguf
from tunesmith.export.llama_cpp import STRINGS, check_llama_cpp, unavailable

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def llama_cpp_here():
    reason = unavailable()
    if reason:
        pytest.skip(reason)


def assert_passed(result):
    failed = {name: row["summary"] for name, row in result["rows"].items() if not row["passed"]}
    assert result["passed"], failed


# four in the fast suite (one per llama.cpp quirk: llama's permuted q/k, qwen2's biases and regex, gemma2's norms and
# soft-capping, phi3's fused tensors and stripped specials); mistral, qwen3 and gemma3 in test-slow
@pytest.mark.parametrize("family", [pytest.param(f, marks=() if f in ("llama", "qwen2", "gemma2", "phi3") else pytest.mark.slow) for f in FAMILIES])
def test_every_family_runs_in_llama_cpp_as_in_tunesmith(family, family_model, tmp_path):
    source = family_model(family)
    if family == "gemma3":  # llama.cpp hard-codes Gemma 3's layer pattern; the fixture's SF layers are not it (export notes it)
        source = as_llama_cpp_runs_gemma3(source, tmp_path / "gemma3")
    out = tmp_path / f"{family}.gguf"
    write_gguf(source, out, "f32")
    result = check_llama_cpp(out, source, "f32")
    assert_passed(result)
    assert result["rows"]["tokenizer"]["checked"] == len(STRINGS) >= 50
    assert len(result["rows"]["greedy"]["ours"]) == 16  # a random model rarely stops: all 16 compared


def test_a_broken_file_is_a_sentence(tmp_path):
    from tunesmith.errors import ModelError
    from tunesmith.export.llama_cpp import load

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="llama.cpp cannot load"):
        load(bad)


def test_a_wrong_pre_tokenizer_name_is_caught(family_model, tmp_path, monkeypatch):
    """The failure this check exists for: a name llama.cpp refuses (as 'gpt2' was) stops the load, with a sentence."""
    import tunesmith.export.gguf as export_gguf
    from tunesmith.errors import ModelError

    monkeypatch.setattr(export_gguf, "_pre_tokenizer", lambda pre, tokenizer=None: "gpt2")
    out = tmp_path / "gpt2-pre.gguf"
    write_gguf(family_model("llama"), out, "f32")
    with pytest.raises(ModelError, match="llama.cpp cannot load"):
        check_llama_cpp(out, family_model("llama"), "f32")


@pytest.mark.slow  # the 135M model in three types, and a LoRA run merged and exported: ~2 min
@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0"])
def test_the_embedded_model_runs_in_llama_cpp(quant, tmp_path):
    from tunesmith.models.load import resolve_model

    source = resolve_model("smollm2-135m-instruct").path
    out = tmp_path / f"smollm2-{quant}.gguf"
    write_gguf(source, out, quant)
    result = check_llama_cpp(out, source, quant)
    assert_passed(result)


@pytest.mark.slow
def test_a_lora_tuned_run_exports_to_llama_cpp(tmp_path):
    from typer.testing import CliRunner

    from tunesmith.cli.main import _register, app

    _register()
    run = tmp_path / "run"
    trained = CliRunner().invoke(app, ["sft", "--max-steps", "3", "--set", f"output_dir={run}", "--set", "sample.prompts=[]"])
    assert trained.exit_code == 0, trained.output
    exported = CliRunner().invoke(app, ["export", str(run), "--format", "gguf", "--quant", "q8_0", "--check", "llama.cpp", "-o", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert "llama.cpp check: passed" in exported.output
