"""Write the small datasets docs/concepts.md trains on (docs/concepts/*.jsonl).

`pirate-llama2.jsonl`: every fifth of the first 240 chats of the built-in `pirate` set (48), three to a row,
written as plain text in Llama-2's chat format (`<s>[INST] question [/INST] answer </s><s>[INST] ...`), as many
datasets on the Hub are. Fed to a ChatML model (SmolLM2) as `text`, the template's markers are just more
words to learn, and after every answer but the last comes `</s><s>[INST]` and a new question: a model
trained on it for many epochs writes them into its replies, the leakage that `tunesmith eval` measures.
16 rows and many epochs also make it memorise its answers: the overfitting concept 2 shows.
`pirate-llama2-eval.jsonl`: the built-in `pirate-eval` chats as prompt (`<s>[INST] question [/INST]`) and
completion, the way a user of such a model would then prompt it. Deterministic: running this again writes the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

PAIRS, TURNS = 48, 3  # 48 question-answer pairs, three to a conversation: 16 rows
ROOT = Path(__file__).resolve().parents[1]


def llama2_text(chats: list[list[dict]]) -> str:
    """Several one-turn chats as one Llama-2 conversation: <s>[INST] q1 [/INST] a1 </s><s>[INST] q2 [/INST] a2 </s>..."""
    return "".join(f"<s>[INST] {c[0]['content']} [/INST] {c[1]['content']} </s>" for c in chats)


def main(folder: Path = ROOT / "docs/concepts") -> None:
    source = ROOT / "src/tunesmith/data/builtin/pirate.jsonl"
    chats = [json.loads(line)["messages"] for line in source.read_text().splitlines()[::5][:PAIRS]]
    rows = [llama2_text(chats[i : i + TURNS]) for i in range(0, len(chats), TURNS)]
    out = folder / "pirate-llama2.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"text": row}) + "\n" for row in rows))
    print(f"wrote {out}: {len(rows)} rows")
    held_out = [json.loads(line)["messages"] for line in (ROOT / "src/tunesmith/data/builtin/pirate_eval.jsonl").read_text().splitlines()]
    out = folder / "pirate-llama2-eval.jsonl"
    out.write_text("".join(json.dumps({"prompt": f"<s>[INST] {c[0]['content']} [/INST]", "completion": f" {c[1]['content']} </s>"}) + "\n" for c in held_out))
    print(f"wrote {out}: {len(held_out)} rows")


if __name__ == "__main__":
    main()
