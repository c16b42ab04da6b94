"""What a training run holds in memory at its peak: the plan's estimate, checked by `tunesmith bench memory`.

Counted, for the model a stage trains (and again for each model it trains beside it, PPO's critic):

- runtime: the process itself on a CPU: Python, torch, transformers, TRL, PEFT and the tokenizer (530 MiB resident
  before any model), plus what loading the data and decoding the answers before training leave on the heap
  (~300-550 MiB when training starts: measured 314 for sft, 415 kto, 557 grpo, 2-core EPYC, torch 2.13,
  transformers 5.23, trl 1.16); on a GPU the estimate is of device memory, which holds none of it;
- weights in the dtype they are stored in (a LoRA base in the compute dtype, full fine-tuning's fp32 masters), with
  full fine-tuning's autocast copies of them in 16 bits, and the adapter's fp32 weights;
- gradients (fp32) and AdamW's two moments (fp32) of what is trained;
- activations: what autograd saves for the backward pass, *measured* on the model's own architecture: a 1- and a
  2-layer copy with random weights, the run's dtype, attention kernel and LoRA targets, are run forward on one row
  of 64 and of 128 tokens under `saved_tensors_hooks`; the difference is one decoder layer's saved bytes, linear
  plus quadratic in the sequence length (eager attention keeps its probabilities). Scaled to the micro-batch's rows
  and longest sequence, and to the layers that are not checkpointed (a checkpointed layer keeps its input; one is
  recomputed at a time). The backward pass holds the gradients of those activations while it runs:
  BACKWARD_FACTOR, measured with `tunesmith bench memory`;
- the loss: one chunk of CHUNK_TOKENS positions' logits (train/loss.py), or, for trainers that project every
  position at once, the whole micro-batch's logits;
- decoding before and after training (the answers shown, RL rollouts): the bf16 weights packed for decoding
  (infer/packed.py) and the KV cache.

The peak is the largest of the phases: loading and the answers before training, training.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache

MIB = 1024**2
RUNTIME_CPU = 850 * MIB
BACKWARD_FACTOR = 1.2  # the step's peak over its saved activations (bench memory, SmolLM2: sft-lora 1.36, pretrain 1.3, reward <= 0.89)
PROBE_LENGTHS = (64, 128)
PROBE_VOCAB = 512


def _probe_config(config, layers: int):
    probe = copy.deepcopy(config)
    probe.num_hidden_layers = layers
    probe.pad_token_id = None  # a special id past the small vocabulary would not fit it
    probe.vocab_size = PROBE_VOCAB  # the embedding's size does not change what a layer saves; a small one builds fast
    for name in ("layer_types", "sliding_window_pattern"):
        value = getattr(probe, name, None)
        if isinstance(value, list):
            setattr(probe, name, value[:layers])
    return probe


def _saved_bytes(
    config,
    dtype,
    attention: str,
    lora_targets: tuple[str, ...] | None,
    length: int,
    head: str,
    packed: bool = False,
    fused: bool = False,
    fused_mlp: bool = False,
) -> int:
    """Bytes autograd saves in one forward of the decoder (no LM head) on one row of `length` tokens; `packed`: two
    documents in the row, their positions restarting and no attention mask, as pretrain's blocks come (transformers
    then masks attention per document, and on a CPU sdpa runs that mask through a kernel that keeps the probabilities)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.initialization import no_init_weights

    cls = AutoModelForSequenceClassification if head == "reward" else AutoModelForCausalLM
    if head == "reward":
        config = copy.deepcopy(config)
        config.num_labels = 1
    torch.manual_seed(0)
    with no_init_weights():
        model = cls.from_config(config, dtype=dtype, attn_implementation=attention)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02) if parameter.dim() > 1 else parameter.fill_(1.0)
    if lora_targets:
        from peft import LoraConfig, get_peft_model

        present = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        targets = [t for t in lora_targets if t in present]
        if targets:
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=targets))
            if fused:
                from tunesmith.train.fused_lora import fuse_lora_layers

                fuse_lora_layers(model)
    else:
        model.requires_grad_(True)
    if fused_mlp:
        from tunesmith.train.fused_mlp import fuse_mlp_layers

        fuse_mlp_layers(model)
    model.train()
    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(decoder, decoder.base_model_prefix)
    owned = {p.untyped_storage().data_ptr() for p in model.parameters()} | {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved: dict[int, int] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in owned and storage.device.type != "meta":
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, PROBE_VOCAB, (1, length))
    rows = {"position_ids": torch.cat([torch.arange(length // 2), torch.arange(length - length // 2)])[None]} if packed else {}
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        out = body(input_ids=ids, use_cache=False, **rows)
    del out
    return sum(saved.values())


@lru_cache(maxsize=64)
def _per_row(
    config_json: str,
    model_type: str,
    dtype_name: str,
    attention: str,
    lora_targets: tuple[str, ...] | None,
    head: str,
    packed: bool,
    fused: bool,
    fused_mlp: bool,
):
    """(per-layer bytes per row as (a, b) with bytes(s) = a*s + b*s^2, the rest of the decoder's bytes per token)."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **json.loads(config_json))
    dtype = getattr(torch, dtype_name)
    measured = {}
    for layers in (1, 2):
        for length in PROBE_LENGTHS:
            measured[layers, length] = _saved_bytes(_probe_config(config, layers), dtype, attention, lora_targets, length, head, packed, fused, fused_mlp)
    s1, s2 = PROBE_LENGTHS
    l1, l2 = (measured[2, s] - measured[1, s] for s in PROBE_LENGTHS)
    b = max((l2 / s2 - l1 / s1) / (s2 - s1), 0.0)  # the quadratic part per s^2 (attention probabilities)
    a = max(l1 / s1 - b * s1, 0.0)
    rest = max(measured[1, s2] - l2, 0) / s2
    return a, b, rest


def activation_bytes(
    config,
    dtype,
    attention: str,
    lora_targets,
    head: str,
    rows: int,
    length: int,
    checkpoint_every: int,
    packed: bool = False,
    fused: bool = False,
    fused_mlp: bool = False,
) -> int:
    """Saved activations of one micro-batch of `rows` x `length` tokens, checkpointing one layer in `checkpoint_every`
    (1: every layer, 0: none); `packed`: rows of several documents (see _saved_bytes); `fused`: LoRA layers as
    train/fused_lora.py runs them; `fused_mlp`: gated MLPs as train/fused_mlp.py runs them."""
    import torch

    key_config = config.to_diff_dict()
    for drop in ("architectures", "auto_map", "transformers_version", "_name_or_path", "torch_dtype", "dtype", "model_type"):
        key_config.pop(drop, None)
    a, b, rest = _per_row(
        json.dumps(key_config, sort_keys=True, default=str),
        config.model_type,
        str(dtype).removeprefix("torch."),
        attention,
        tuple(lora_targets) if lora_targets else None,
        head,
        packed,
        fused,
        fused_mlp,
    )
    per_layer = rows * (a * length + b * length * length)
    layers = config.num_hidden_layers
    checkpointed = -(-layers // checkpoint_every) if checkpoint_every else 0
    layer_input = rows * length * config.hidden_size * torch.finfo(dtype).bits // 8
    kept = per_layer * (layers - checkpointed) + layer_input * checkpointed + (per_layer if checkpointed else 0)
    return int(kept + rows * length * rest)
