"""The language-model loss on the supervised positions only, without vocabulary-sized tensors.

A causal LM's usual loss projects every position through the LM head and upcasts the
`(batch, seq, vocab)` logits to fp32, although only the completion tokens are scored
(about 40% of positions on short chat data). TRL's fused head avoids the full logits
but, off CUDA, still scores every position and runs its backward GEMMs in fp32.

`linear_cross_entropy` projects only the hidden states whose next token is supervised,
in chunks of tokens, and computes the gradient during the forward pass (the softmax is
at hand then), so nothing of vocabulary size outlives a chunk and nothing is recomputed.
The arithmetic is the usual one: logits in the weights' dtype, softmax and loss in fp32,
the logits' gradient rounded to the weights' dtype for the GEMMs (as autograd does when
it flows back through `logits.float()`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from tunesmith.train.prefix import scored_hidden_states

CHUNK_TOKENS = 128  # measured on the 2-core EPYC (49k vocabulary, 210 scored tokens): 128 -> 117 ms, 1024 -> 122 ms, 32 -> 145 ms; a chunk's buffers are ~60 MB


@dataclass
class LossStats:
    """Per-batch figures the trainer logs: scored tokens, top-1 hits, and the summed entropy (nats)."""

    tokens: torch.Tensor
    correct: torch.Tensor
    entropy: torch.Tensor


_kept = threading.local()  # the chunk buffers this thread last used on a CPU, kept for its next call


def _chunk_buffers(chunk: int, n: int, vocab: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A chunk's work buffers, reused by every chunk and filled in place: the shifted logits and the probabilities in
    fp32, and the logits (then their gradient) in the product's dtype; in fp32 that is the first buffer itself (25 MB
    less per 128 tokens of a 49k vocabulary).

    On a CPU they are also kept for the thread's next call (one set of `chunk` rows, for the last vocabulary and dtype):
    a fresh block is page-faulted in by the OS as it is first written, which made every micro-batch's first chunk
    3-15x slower than the next (exp 10-46 ms instead of 3, the logits' product 27-47 ms instead of 20: ~6% of a bf16
    SFT step on the 2-core EPYC). The buffers are live at the loss anyway, the activation peak, so keeping them
    raises no peak."""
    cpu = hidden.device.type == "cpu"
    key = (chunk, vocab, hidden.dtype)
    kept = getattr(_kept, "buffers", None) if cpu else None
    if kept is not None and kept[0] == key:
        return kept[1]
    rows = chunk if cpu else min(chunk, n)  # pages are touched as rows are used: a short call costs no more
    shifted = torch.empty((rows, vocab), dtype=torch.float32, device=hidden.device)
    probs = torch.empty_like(shifted)
    narrow = shifted if hidden.dtype == torch.float32 else torch.empty((rows, vocab), dtype=hidden.dtype, device=hidden.device)
    if cpu:
        _kept.buffers = (key, (shifted, probs, narrow))
    return shifted, probs, narrow


def _logits(h: torch.Tensor, weight: torch.Tensor, low: torch.Tensor, z: torch.Tensor) -> None:
    """A chunk's logits into `low` in the weights' dtype, then into `z` in fp32 (the same buffer in fp32)."""
    torch.mm(h, weight.t(), out=low)
    if low.data_ptr() != z.data_ptr():
        z.copy_(low)


def _dot_rows(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Each row's dot product of `z` and `e`, written through `z` (no longer needed): `torch.linalg.vecdot` would
    allocate a vocabulary-sized product per chunk, page-faulted in each time (30-40 ms instead of 3)."""
    return z.mul_(e).sum(dim=-1)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, grad_hidden_needed: bool, grad_weight_needed: bool, chunk: int):
        n, vocab = hidden.shape[0], weight.shape[0]
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        entropy = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if grad_hidden_needed else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if grad_weight_needed else None
        shifted, probs, narrow = _chunk_buffers(chunk, n, vocab, hidden)
        for start in range(0, n, chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            rows = torch.arange(len(t), device=t.device)
            z, e, low = shifted[: len(t)], probs[: len(t)], narrow[: len(t)]
            _logits(h, weight, low, z)
            top, argmax = z.max(dim=-1)
            z.sub_(top.unsqueeze(1))  # z - max: exp cannot overflow
            torch.exp(z, out=e)
            total = e.sum(dim=-1)
            log_total = total.log()
            loss += (log_total - z[rows, t]).sum()  # -log p_t = log sum exp(z - max) - (z_t - max)
            entropy += (log_total - _dot_rows(z, e) / total).sum()  # -sum p log p
            correct += (argmax == t).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            e.mul_(total.reciprocal().unsqueeze(1))
            e[rows, t] -= 1.0  # d(-log p_t)/dz = softmax - onehot
            g = e if narrow is shifted else low.copy_(e)
            if grad_hidden is not None:
                torch.mm(g, weight, out=grad_hidden[start : start + chunk])
            if grad_weight is not None:
                grad_weight += (g.t() @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct, entropy)
        return loss, correct, entropy

    @staticmethod
    def backward(ctx, grad_loss, *_):
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = (grad_hidden * grad_loss.to(grad_hidden.dtype)) if grad_hidden is not None else None
        gw = (grad_weight * grad_loss).to(ctx.weight_dtype) if grad_weight is not None else None
        return gh, gw, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = CHUNK_TOKENS) -> tuple[torch.Tensor, LossStats]:
    """Summed -log p(target) of `hidden @ weight.T` (hidden: [N, H], weight: [V, H], targets: [N]), and its stats.

    The product runs in autocast's dtype when autocast is on (as `nn.Linear` would), else in the weights' dtype."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        hidden, weight = hidden.to(dtype), weight.to(dtype)  # differentiable casts: fp32 master weights get their gradient
    elif hidden.dtype != weight.dtype:
        hidden = hidden.to(weight.dtype)
    grad = torch.is_grad_enabled()
    with torch.autocast(device, enabled=False):
        loss, correct, entropy = _LinearCrossEntropy.apply(hidden, weight, targets, grad and hidden.requires_grad, grad and weight.requires_grad, chunk)
    return loss, LossStats(torch.tensor(len(targets), device=hidden.device), correct, entropy)


class _TokenLogProbs(torch.autograd.Function):
    """Per-token log p(target) of `(hidden @ weight.T) / T` for a weight that takes no gradient (a LoRA run's head),
    with each token's entropy, mean logit, whether the target is the top-1 token and log sum p^2.

    The gradient of a token's log-probability with respect to its hidden state is one row,
    (onehot - softmax) @ weight / T, formed in the forward pass while the softmax is at hand; the backward only
    scales each row by its upstream gradient. TRL's fused head instead projects every chunk again in its backward.
    Only the log-probabilities carry a gradient (the others are what trainers log or mask with; a loss that
    differentiates the entropy stops with an error)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_t: float, need_grad: bool, chunk: int):
        n, vocab = hidden.shape[0], weight.shape[0]
        f32 = dict(dtype=torch.float32, device=hidden.device)
        logp, entropy, mean, sq = (torch.empty(n, **f32) for _ in range(4))
        top1 = torch.empty(n, dtype=torch.bool, device=hidden.device)
        rows_grad = torch.empty_like(hidden) if need_grad else None
        shifted, probs, narrow = _chunk_buffers(chunk, n, vocab, hidden)
        for start in range(0, n, chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            rows, part = torch.arange(len(t), device=t.device), slice(start, start + len(t))
            z, e, low = shifted[: len(t)], probs[: len(t)], narrow[: len(t)]
            _logits(h, weight, low, z)
            if inv_t != 1.0:
                z.mul_(inv_t)
            mean[part] = z.mean(dim=-1)
            top, argmax = z.max(dim=-1)
            top1[part] = argmax == t
            z.sub_(top.unsqueeze(1))
            torch.exp(z, out=e)
            total = e.sum(dim=-1)
            log_total = total.log()
            logp[part] = z[rows, t] - log_total
            entropy[part] = log_total - _dot_rows(z, e) / total
            sq[part] = 2 * (torch.linalg.vector_norm(e, dim=-1).log() - log_total)
            if rows_grad is None:
                continue
            e.mul_((-inv_t / total).unsqueeze(1))
            e[rows, t] += inv_t  # d log p_t / d logits = (onehot - softmax) / T
            torch.mm(e if narrow is shifted else low.copy_(e), weight, out=rows_grad[part])
        ctx.save_for_backward(rows_grad)
        ctx.mark_non_differentiable(mean, top1, sq)
        ctx.set_materialize_grads(False)
        return logp, entropy, mean, top1, sq

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy, *_):
        if grad_entropy is not None:
            raise NotImplementedError(
                "tunesmith's CPU LM head gives no gradient through the entropy (an entropy bonus in the loss); "
                "train with TRL's head: set the trainer's cast_lm_head_to_fp32, or train on a GPU"
            )
        (rows_grad,) = ctx.saved_tensors
        if grad_logp is None or rows_grad is None:
            return None, None, None, None, None, None
        return (rows_grad * grad_logp.unsqueeze(1)).to(rows_grad.dtype), None, None, None, None, None


@dataclass
class TokenScores:
    """What `token_log_probs` gives per scored token (all [N], fp32 except `is_top1`)."""

    log_probs: torch.Tensor
    entropy: torch.Tensor
    mean_logits: torch.Tensor
    is_top1: torch.Tensor
    log_sum_sq_probs: torch.Tensor


def token_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, chunk: int = CHUNK_TOKENS) -> TokenScores:
    """log p(target) of each row of `hidden @ weight.T / temperature` (hidden: [N, H], weight: [V, H] with no
    gradient, targets: [N]), differentiable with respect to `hidden`, and the per-token figures trainers log.
    The product runs in autocast's dtype when autocast is on, else in the weights' dtype."""
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError("token_log_probs forms the hidden states' gradient only: the weight must not require one")
    weight = weight.detach()
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    with torch.autocast(device, enabled=False):
        need = torch.is_grad_enabled() and hidden.requires_grad
        return TokenScores(*_TokenLogProbs.apply(hidden, weight, targets, 1.0 / temperature, need, chunk))


def causal_lm_loss(model, inputs: dict, num_items_in_batch=None) -> tuple[torch.Tensor, LossStats]:
    """Next-token loss of `model` on `inputs` (with `labels`, -100 = not scored), scoring only labelled positions.

    The model is called as a whole (so DDP/FSDP wrappers and PEFT see their usual forward), asked for its last
    hidden state and for the logits of no position. Mean over `num_items_in_batch` when given (the
    Trainer's count across gradient-accumulation micro-batches), else over this batch's scored tokens.
    """
    labels = inputs["labels"]
    hidden = last_hidden_states(model, **{k: v for k, v in inputs.items() if k != "labels"})[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    weight = output_embeddings(model).weight
    total, stats = linear_cross_entropy(hidden[mask], weight, targets[mask])
    denominator = num_items_in_batch if num_items_in_batch is not None else stats.tokens.clamp(min=1)
    return total / denominator, stats


def unwrapped(model):
    """The transformers model under any wrapper (DDP, PEFT)."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def output_embeddings(model):
    """The LM head under any wrapper (DDP, PEFT)."""
    return unwrapped(model).get_output_embeddings()


def last_hidden_states(model, input_ids: torch.Tensor, **inputs):
    """The model's last hidden states (position t predicts token t + 1); the model called as a whole (so
    DDP/FSDP wrappers and PEFT see their usual forward) with its own head projecting no position (an int
    `logits_to_keep=1` still costs a [batch, 1, vocab] product, which CPU bf16 runs as a batched matmul over a copied
    weight: ~0.4 s a step on SmolLM2)."""
    no_position = torch.empty(0, dtype=torch.long, device=input_ids.device)
    outputs = model(input_ids=input_ids, **inputs, use_cache=False, output_hidden_states=True, logits_to_keep=no_position)
    return outputs.hidden_states[-1]


def spread_over(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per-token values of the scored positions laid out over `mask`'s shape, 0 where nothing was scored (as TRL's
    fused head gives them); connected to `values` for autograd even when `mask` selects nothing."""
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


def trains(head) -> bool:
    """Whether a gradient flows to the LM head in this call (full fine-tuning, or LoRA with train_embeddings)."""
    return torch.is_grad_enabled() and any(p.requires_grad for p in head.parameters())


def plain_lm_head(model):
    """`model`'s LM head (under any wrapper) where its output is the logits themselves, as `token_log_probs` scores
    them: no bias, no soft-capping or scaling; else None."""
    inner = unwrapped(model)
    head = inner.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None or not plain_head(inner.config.get_text_config()):
        return None
    return head


def plain_head(config) -> bool:
    """No soft-capping or logit scaling: the head's output is the logits."""
    scales = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
    return all(getattr(config, name, None) in (None, 1.0) for name in scales) and not getattr(config, "output_router_logits", False)


def replace_fused_head(model, temperature: float = 1.0) -> bool:
    """Route the per-token log-probabilities of TRL's fused head (`add_fused_lm_head`, which DPO, KTO, GRPO and RLOO
    add to their models; `model(..., labels=labels, fused_lm_head=True)`) through `token_log_probs`: the same
    backbone, only the positions whose label is not -100 scored, TRL's `FusedCausalLMOutput` with the same fields.
    TRL's head, off CUDA, projects every position and projects each chunk again in its backward. Calls this does not
    cover keep TRL's head: a head that takes a gradient (full fine-tuning), soft-capped, scaled or biased logits,
    MoE router logits, pre-shifted labels. Returns whether the forward was replaced."""
    import functools
    import types

    from trl.trainer.utils import FusedCausalLMOutput

    inner = unwrapped(model)
    trl_forward = vars(inner).get("forward")  # TRL's add_fused_lm_head sets the instance's forward
    if fused_head_of(inner) != "trl" or plain_lm_head(inner) is None:
        return False

    @functools.wraps(type(inner).forward)  # generate() checks its keyword arguments against this signature
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        head = self.get_output_embeddings()
        if (
            not fused_lm_head
            or len(args) > 1
            or (not args and kwargs.get("input_ids") is None)
            or shift_labels is not None
            or trains(head)
            or kwargs.get("output_router_logits")
        ):
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch, **kwargs)
        if args:
            kwargs["input_ids"] = args[0]
        input_ids, attention_mask = kwargs.pop("input_ids"), kwargs.pop("attention_mask", None)
        labels = labels[:, 1:].to(input_ids.device)
        mask = labels != -100
        kwargs["use_cache"] = False
        backbone, extra = self.base_model, any(v is not None for k, v in kwargs.items() if k != "use_cache")

        def run(**inputs):
            return backbone(**inputs, **kwargs).last_hidden_state

        hidden = scored_hidden_states(run, self.config, input_ids, attention_mask, mask, pack=not extra)  # images etc.: as given
        scores = token_log_probs(hidden, head.weight, labels[mask], temperature)
        spread = functools.partial(spread_over, mask)
        log_probs = spread(scores.log_probs)
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denominator,
            log_probs=log_probs,
            entropy=spread(scores.entropy),
            log_sum_sq_probs=spread(scores.log_sum_sq_probs),
            mean_logits=spread(scores.mean_logits),
            is_top1=spread(scores.is_top1),
            label_mask=mask,
        )

    forward.tunesmith_head = True
    inner.forward = types.MethodType(forward, inner)
    return True


def fused_head_of(model) -> str | None:
    """Whose fused LM head `model` carries: "tunesmith" (replace_fused_head), "trl" (add_fused_lm_head), or None."""
    forward = vars(unwrapped(model)).get("forward")
    if forward is None:
        return None
    return "tunesmith" if getattr(getattr(forward, "__func__", None), "tunesmith_head", False) else "trl"
