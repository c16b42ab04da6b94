"""Shared prompts run once: rows of a batch that start with the same prompt become one row.

DPO scores a chosen and a rejected answer to the same prompt, GRPO and RLOO a group of completions of one prompt;
TRL's trainers run each answer with its own copy of the prompt, through the policy and again through the
reference. Causal attention makes the prompt's hidden states the same in every copy, so a batch can run each
distinct prompt once with its answers after it: one packed row [prompt, answer 1, answer 2, ...] whose attention
mask lets every answer see the prompt and itself, never a sibling, and whose position ids restart after the
prompt for each answer. The hidden states at the scored positions are those of the rows as given (the same
arithmetic, rounded in other kernel shapes); gradients reach the prompt once from every answer, which is their sum.

This is the prefix sharing of "Accelerating Direct Preference Optimization with Prefix Sharing" (Wang et al.,
2024), on torch's eager and sdpa attention with a dense mask; any other batch runs as given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.train.varlen import implementation

ATTENTION = ("eager", "sdpa")  # the implementations that take a 4-D mask as given
VARLEN = tuple(implementation(kernel) for kernel in ATTENTION)  # train/varlen.py's: packed rows without padding


@dataclass
class PackedBatch:
    """The packed rows, and where each scored position of the batch as given lies in them."""

    input_ids: torch.Tensor  # (packed rows, length)
    position_ids: torch.Tensor  # (packed rows, length)
    attention_mask: torch.Tensor | None  # (packed rows, 1, length, length): True where a query may see a key; None: causal
    scored: torch.Tensor  # flat indices into (packed rows x length), in the row-major order of the scored mask
    positions: int  # real positions as given (what packing saves from)
    lengths: list[int]  # real positions of each packed row

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]

    def padding_free(self) -> tuple[dict, torch.Tensor]:
        """The packed rows end to end in one row without their padding, as train/varlen.py runs them (its boundaries
        and each row's own mask), and where the scored positions lie in that row."""
        lengths = torch.tensor(self.lengths)
        starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        real = (torch.arange(self.length)[None, :] < lengths[:, None]).to(self.input_ids.device)
        bounds = starts.to(torch.int32).to(self.input_ids.device)
        rows = self.scored.div(self.length, rounding_mode="floor")
        scored = starts.to(self.scored.device)[rows] + self.scored - rows * self.length
        inputs = dict(
            input_ids=self.input_ids[real][None],
            position_ids=self.position_ids[real][None],
            attention_mask=self.attention_mask,
            cu_seq_lens_q=bounds,
            cu_seq_lens_k=bounds,
            max_length_q=self.length,
            max_length_k=self.length,
        )
        return inputs, scored


def pack_shared_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, scored: torch.Tensor, answers: torch.Tensor | None = None, pad_id: int = 0
) -> PackedBatch | None:
    """The batch with rows that share a prompt packed into one row each, or None where nothing would be shared.

    `scored` (rows, length - 1) marks the hidden positions whose output is used (position t predicts token t + 1);
    `answers` (default: `scored`) marks those that predict an answer token: a row's prompt is everything up to its
    first marked position, its answer everything after (ORPO also scores the chosen row's prompt). Rows must be a run
    of padding, real tokens, then padding (TRL's left-padded prompts and right-padded answers); a batch with any other
    mask layout is not packed. Rows with nothing scored are left out (their outputs are never read)."""
    rows, length = input_ids.shape
    answers = scored if answers is None else answers
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    groups: dict[tuple, list[tuple[int, int, int]]] = {}
    kept = {}  # row -> (its first real position, its scored positions)
    for row in range(rows):
        marked, answer = scored[row].nonzero().flatten(), answers[row].nonzero()
        if not len(marked):
            continue
        if not len(answer):
            return None
        cut = int(answer[0]) + 1  # the prompt: positions [0, cut); its last position predicts the answer's first token
        span = _real_span(real[row], marked)
        if span is None or span[0] >= cut:
            return None
        start, end = span
        prompt = tuple(input_ids[row, start:cut].tolist())
        groups.setdefault(prompt, []).append((row, cut, end))
        kept[row] = start, marked
    if not groups or all(len(members) == 1 for members in groups.values()):
        return None

    packed_ids, packed_positions, segments, where = [], [], [], {}
    for prompt, members in groups.items():
        ids, pos, seg = list(prompt), list(range(len(prompt))), [-1] * len(prompt)
        for k, (row, cut, end) in enumerate(members):
            where[row] = (len(packed_ids), len(ids), cut)
            ids += input_ids[row, cut:end].tolist()
            pos += range(len(prompt), len(prompt) + end - cut)
            seg += [k] * (end - cut)
        packed_ids.append(ids)
        packed_positions.append(pos)
        segments.append(seg)

    width = max(len(ids) for ids in packed_ids)
    n = len(packed_ids)
    ids_t = torch.full((n, width), pad_id, dtype=input_ids.dtype)
    pos_t = torch.zeros((n, width), dtype=torch.long)
    seg_t = torch.full((n, width), -2, dtype=torch.long)  # -2: padding, -1: the prompt, k: the k-th answer
    for i, (ids, pos, seg) in enumerate(zip(packed_ids, packed_positions, segments)):
        ids_t[i, : len(ids)] = torch.tensor(ids)
        pos_t[i, : len(pos)] = torch.tensor(pos)
        seg_t[i, : len(seg)] = torch.tensor(seg)
    query, key = seg_t[:, :, None], seg_t[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = causal & ((key == -1) | (key == query)) & (key != -2)
    visible |= torch.eye(width, dtype=torch.bool) & (query == -2)  # padding sees itself: no empty softmax row

    flat = []
    for row, (start, marked) in kept.items():  # rows in order, as the scored mask's row-major order needs
        packed_row, offset, cut = where[row]
        # prompt position t lies at t - start in the packed row, answer position t >= cut at offset + (t - cut)
        at = torch.where(marked < cut, marked - start, offset + marked - cut)
        flat.append(packed_row * width + at)
    return PackedBatch(
        input_ids=ids_t.to(input_ids.device),
        position_ids=pos_t.to(input_ids.device),
        attention_mask=visible[:, None].to(input_ids.device),
        scored=torch.cat(flat).to(input_ids.device),
        positions=int(real.sum()),
        lengths=[len(ids) for ids in packed_ids],
    )


def _real_span(real: torch.Tensor, marked: torch.Tensor) -> tuple[int, int] | None:
    """[start, end) of a row's real tokens where they are one run (padding on either side) holding every marked
    position, else None."""
    positions = real.nonzero().flatten()
    if not len(positions):
        return None
    start, end = int(positions[0]), int(positions[-1]) + 1
    if len(positions) != end - start or int(marked[0]) < start or int(marked[-1]) >= end:
        return None
    return start, end


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, scored: torch.Tensor) -> PackedBatch | None:
    """Each row with something scored as a packed row of its own: its real tokens, positions from 0, attending
    causally (train/varlen.py runs them end to end without padding). KTO's rows share no prompt inside a forward
    (TRL scores answers and KL pairs in separate calls), yet ~a third of their positions can be padding. Rows must be
    one run of real tokens (padding on either side), else None."""
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    spans = []  # (row, start, end, its scored positions)
    for row in range(input_ids.shape[0]):
        marked = scored[row].nonzero().flatten()
        if not len(marked):
            continue
        span = _real_span(real[row], marked)
        if span is None:
            return None
        spans.append((row, *span, marked))
    if not spans:
        return None
    lengths = [end - start for _, start, end, _ in spans]
    width = max(lengths)
    ids = input_ids.new_zeros((len(spans), width))
    flat = []
    for k, (row, start, end, marked) in enumerate(spans):  # rows in order, as the scored mask's row-major order needs
        ids[k, : end - start] = input_ids[row, start:end]
        flat.append(k * width + marked - start)
    return PackedBatch(
        input_ids=ids,
        position_ids=torch.arange(width, device=input_ids.device).expand(len(spans), width),
        attention_mask=None,
        scored=torch.cat(flat),
        positions=int(real.sum()),
        lengths=lengths,
    )


def can_pack(config, attention_mask: torch.Tensor | None) -> bool:
    """Whether this model's attention takes a 4-D mask as given (eager, sdpa) and the batch comes with a 2-D one."""
    return getattr(config, "_attn_implementation", None) in ATTENTION + VARLEN and (attention_mask is None or attention_mask.dim() == 2)


def within_window(config, length: int) -> bool:
    """A sliding or chunked attention window longer than every row sees what full causal attention sees (a
    multimodal model's window is in its text config)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    windows = [getattr(c, name, None) for c in (config, text) for name in ("sliding_window", "attention_chunk_size")]
    return all(window is None or length <= window for window in windows)


def scored_hidden_states(
    run, config, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, scored: torch.Tensor, answers: torch.Tensor | None = None, pack: bool = True
) -> torch.Tensor:
    """The last hidden states at the scored positions, (scored positions, width) in row-major order, each distinct
    prompt run once where rows share one (`pack_shared_prompts`), else the rows without their padding where the model
    runs padding-free (`pack_rows`), the rows as given otherwise. `run(**inputs)`
    runs the model on input_ids, attention_mask (and position_ids) and returns its last hidden states, unshifted;
    `pack=False` runs the rows as given (a forward with inputs other than text)."""
    packed, varlen = None, config._attn_implementation in VARLEN
    if pack and can_pack(config, attention_mask) and within_window(config, input_ids.shape[1]):
        packed = pack_shared_prompts(input_ids, attention_mask, scored, answers, pad_id=getattr(config, "pad_token_id", None) or 0)
        if packed is None and varlen:  # nothing shared: the rows as given, without their padding
            packed = pack_rows(input_ids, attention_mask, scored)
    if packed is None or (not varlen and packed.input_ids.numel() >= input_ids.numel()):
        return run(input_ids=input_ids, attention_mask=attention_mask)[:, :-1][scored]
    if varlen:  # padding-free: the layers see only the packed rows' real tokens
        inputs, at = packed.padding_free()
        return run(**inputs)[0][at]
    mask = packed.attention_mask
    if config._attn_implementation == "eager":  # eager attention adds its mask to the scores (and softmaxes in fp32)
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
    hidden = run(input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids)
    return hidden.reshape(-1, hidden.shape[-1])[packed.scored]
