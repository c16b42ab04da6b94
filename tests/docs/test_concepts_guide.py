"""docs/concepts.md: the concepts guide's own rules (its blocks run in test_guides.py, as every page's do).

The matching rules every page follows are tests/docs/guide.py's; they are pinned down here on hand-made lines.
"""

from __future__ import annotations

import re

from guide import DOCS, ROOT, line_matches, output_matches

GUIDE = DOCS / "concepts.md"


def test_guide_covers_every_concept():
    """Thirteen concepts, each with at least one checked block, and the README links the guide."""
    text = GUIDE.read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    numbered = [s for s in sections if re.match(r"\d+\. ", s)]
    assert [int(s.split(".")[0]) for s in numbered] == list(range(1, 14))
    for section in numbered:
        assert "<!-- guide:" in section, f"concept {section.splitlines()[0]!r} has no checked command"
    assert "docs/concepts.md" in (ROOT / "README.md").read_text()


def test_matching_rules():
    assert line_matches("loss 1.660  lr 9.99e-04  206 tok/s  eta 4m01s", "loss 1.661  lr 9.99e-04  301 tok/s  eta 2m01s", 0.01)
    assert not line_matches("loss 1.660", "loss 1.661", 0)
    assert not line_matches("loss 1.660", "loss 1.760", 0.01)
    assert line_matches("│ fp16 │  65504 │", "│ fp16   │     65504 │", 0)
    assert line_matches("cpu: … torch kernels AVX512", "cpu: AMX CPU (Xeon), torch kernels AVX512", 0)
    assert not line_matches("chose 'Paris'", "chose 'Rome'", 0.5)
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"], 0) is None
    assert output_matches(["a", "d"], ["a", "b", "d"], 0) is not None  # a gap must be marked
    assert output_matches(["a", "..."], ["a", "b"], 0) is None
    assert output_matches(["b"], ["a", "b"], 0) is not None  # leading lines too
    # table rules follow the widths of their columns; machine lines are compared by their label only
    assert line_matches("┏━━━━━━━━┳━━━━━━━━┓", "┏━━━━━┳━━━━━━━━━━━┓", 0)
    assert not line_matches("┏━━━━━━━━┳━━━━━━━━┓", "┏━━━━━━━━━━━━━━━━┓", 0)
    assert line_matches("cpu: AMX CPU (Intel(R) Xeon(R) Processor), torch kernels AVX512", "cpu: AVX2 CPU (AMD EPYC), torch kernels AVX2", 0)
    assert line_matches("this machine: precision auto -> bf16 (…)", "this machine: precision auto -> fp32 (no GPU)", 0)
    assert line_matches("memory (est.)   0.83 GiB: weights 0.25 GiB", "memory (est.)   1.20 GiB: weights 0.50 GiB", 0)
    assert line_matches("precision: bf16 (CPU has avx512_bf16/AMX)", "precision: fp32 (no GPU)", 0)
    assert not line_matches("cpu: anything", "gpu: anything", 0)
    assert not line_matches("parameters      1,843,200 trainable", "parameters      1,843,201 trainable", 0)


def test_the_guides_data_regenerates(tmp_path):
    """docs/concepts/*.jsonl are what tools/make_concepts_data.py writes, byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_concepts_data", ROOT / "tools" / "make_concepts_data.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(tmp_path)
    written = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert written == sorted(p.name for p in (ROOT / "docs" / "concepts").glob("*.jsonl")) == ["pirate-llama2-eval.jsonl", "pirate-llama2.jsonl"]
    for name in written:
        assert (tmp_path / name).read_bytes() == (ROOT / "docs" / "concepts" / name).read_bytes(), name
