"""Continued pre-training on raw text (data/corpus.py): next-token loss on every token of fixed-length blocks.

The corpus is tokenised once into an on-disk cache and cut into blocks of `data.max_length` tokens; training reads
the blocks memory-mapped through `trl.SFTTrainer`. `BlockCollator` gives each block position ids that restart at
every document, and no attention mask: transformers then masks attention per document within each row (its packed-
sequence detection), so no token attends across a document boundary; each document's first token is left unscored.
Rows stay rows: TRL's padding-free collator would flatten a micro-batch into one row, whose attention (without a
varlen kernel, i.e. on a CPU) costs the square of the whole batch's tokens (8 blocks of 512: 8x the FLOPs, and a
4096 x 4096 mask per head). Before and after training the held-out blocks are scored the same way: their perplexity
is what the run changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tunesmith.train.stages.base import Change, Stage, StageData


def _progress_printer(console_file=None):
    """A progress bar over the corpus's bytes while it is tokenised (only shown on a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    progress = Progress(
        TextColumn("tokenising"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True
    )
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task("tokenising", total=total)
        progress.update(task, completed=done)
        if done >= total:
            progress.stop()

    return update


def corpus_summary(files, tokens: int, documents: int, train_blocks: int, eval_blocks: int, block_size: int, estimated: str = "") -> str:
    size = sum(p.stat().st_size for p in files)
    what = f"~{tokens:,} tokens ({estimated})" if estimated else f"{tokens:,} tokens"
    docs = f"{documents:,} documents, " if documents else ""
    return (
        f"{len(files):,} file{'s' if len(files) != 1 else ''} ({size / 1e6:.1f} MB), {docs}{what}; "
        f"{'~' if estimated else ''}{train_blocks:,} blocks of {block_size} tokens for training, {eval_blocks} held out for perplexity"
    )


class PretrainStage(Stage):
    name = "pretrain"
    title = "continued pre-training"
    data_kind = "text"
    trainer_wraps_adapter = False  # as SFT: the same trainer and speed settings
    chat = False  # sample prompts are text to continue, not chat turns
    packs_documents = True

    @property
    def unit(self) -> str:
        return "blocks"

    def describe(self, recipe) -> str:
        return f"{self.title} on raw text, blocks of {recipe.data.max_length} tokens"

    def _files(self, recipe, source):
        from tunesmith.data.corpus import corpus_files

        return corpus_files(source or recipe.data.dataset)

    def prepare_data(self, recipe, tokenizer, source=None, with_eval=True) -> StageData:
        from tunesmith.data.corpus import load_blocks, make_blocks, tokenize_corpus

        files = self._files(recipe, source)
        cache = tokenize_corpus(files, tokenizer, recipe.pretrain.text_field, progress=_progress_printer())
        blocks = make_blocks(cache, recipe.data.max_length, recipe.pretrain.eval_blocks)
        evaluation = load_blocks(blocks.eval) if with_eval and blocks.eval else None
        return StageData(
            train=load_blocks(blocks.train),
            eval=evaluation,
            summary=corpus_summary(files, cache.tokens, cache.documents, blocks.train_blocks, blocks.eval_blocks, blocks.block_size)
            + f"\ncache: {cache.folder}",
            num_examples=cache.documents,
            num_sequences=blocks.train_blocks,
            longest=recipe.data.max_length,
            tokens=blocks.train_blocks * recipe.data.max_length,
            raw=blocks,
        )

    def plan_data(self, recipe, tokenizer, source=None) -> StageData:
        """Exact figures when the corpus is cached; otherwise tokens estimated from a sample, nothing tokenised."""
        from tunesmith.data.corpus import estimate_tokens, find_cache, held_out

        files = self._files(recipe, source)
        if find_cache(files, tokenizer, recipe.pretrain.text_field) is not None:
            return self.prepare_data(recipe, tokenizer, source, with_eval=False)
        tokens, sampled = estimate_tokens(files, tokenizer, recipe.pretrain.text_field)
        size = recipe.data.max_length
        blocks = max(-(-tokens // size), 1)
        held = len(held_out(blocks, recipe.pretrain.eval_blocks))
        label = f"estimated from a {sampled / 1e6:.2f} MB sample; exact once tokenised and cached by the first run"
        return StageData(
            train=None,
            eval=None,
            summary=corpus_summary(files, tokens, 0, blocks - held, held, size, estimated=label),
            num_examples=0,
            num_sequences=blocks - held,
            longest=size,
            tokens=(blocks - held) * size,
        )

    def config(self, recipe, common: dict, schedule=None):
        from trl import SFTConfig

        common.pop("use_liger_kernel", None)
        return SFTConfig(
            **common,
            max_length=None,  # the blocks are cut to data.max_length already
            packing=False,
            dataset_kwargs={"skip_prepare_dataset": True},  # the blocks are the trainer's rows already
        )

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        from tunesmith.train.trainer import CompactLossSFTTrainer

        return CompactLossSFTTrainer(
            model=model,
            args=args,
            data_collator=BlockCollator(pad_id(tokenizer)),
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            callbacks=callbacks,
        )

    def measure(self, model, tokenizer, recipe, data: StageData) -> dict:
        if data.eval is None:
            return {}
        loss, tokens = held_out_loss(model, tokenizer, data.eval, recipe.training.per_device_train_batch_size)
        return {"loss": loss, "perplexity": math.exp(loss), "tokens": tokens}

    def compare(self, before: dict, after: dict) -> tuple[list[Change], list[dict], str]:
        if not before or not after:
            return [], [], ""
        return (
            [
                Change(f"held-out perplexity ({before['tokens']:,} tokens)", before["perplexity"], after["perplexity"], "{:.2f}"),
                Change("held-out loss (nats per token)", before["loss"], after["loss"], "{:.4f}"),
            ],
            [],
            "",
        )


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@dataclass
class BlockCollator:
    """Blocks ({input_ids, seq_lengths}) into a batch: one row each (a shorter last block padded on the right), position
    ids restarting at every document piece, labels = the tokens but -100 on each piece's first token and on padding;
    no attention mask, so the model masks attention per document."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.as_tensor(row["input_ids"])
            labels[i, :n] = ids[i, :n]
            start = 0
            for length in [*row["seq_lengths"], width - n]:  # the padding, if any, is a piece of its own
                if length:
                    positions[i, start : start + length] = torch.arange(length)
                    labels[i, start] = -100
                start += length
        return {"input_ids": ids, "labels": labels, "position_ids": positions}


def held_out_loss(model, tokenizer, blocks, batch_size: int = 8) -> tuple[float, int]:
    """(mean next-token loss, tokens scored) of `model` on `blocks`, batched and scored exactly as training scores them."""
    import torch

    from tunesmith.train.loss import causal_lm_loss

    collate = BlockCollator(pad_id(tokenizer))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(blocks), batch_size):
                rows = blocks.select(range(start, min(start + batch_size, len(blocks))))
                batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in collate([dict(r) for r in rows]).items()}
                loss, stats = causal_lm_loss(model, batch)
                total += float(loss) * int(stats.tokens)
                count += int(stats.tokens)
    finally:
        if was_training:
            model.train()
    return total / max(count, 1), count
