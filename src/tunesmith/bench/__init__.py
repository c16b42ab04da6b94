"""`tunesmith bench`: our defaults against what a user would otherwise write, side by side in one run.

measure.py   the machine's bf16 matmul peak, resident memory, model FLOPs per token, medians
sft.py       fine-tuning: a plain TRL SFTTrainer script against `tunesmith sft`, each run in its own process
generate.py  generation: a per-prompt `model.generate` loop against our batched generation, outputs compared
worker.py    the subprocess entry point that runs one side once and prints its figures as JSON
"""
