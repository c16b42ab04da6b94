"""Batched generation with the model's chat template; stops at the end-of-turn token."""

from __future__ import annotations


def stop_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end a reply: the tokenizer's eos plus the model's generation_config eos ids."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return sorted(i for i in ids if i is not None)


def render_prompts(tokenizer, prompts: list[str], chat: bool = True, system: str | None = None) -> list[str]:
    if not chat or not getattr(tokenizer, "chat_template", None):
        return list(prompts)
    head = [{"role": "system", "content": system}] if system else []
    return [tokenizer.apply_chat_template([*head, {"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    chat: bool = True,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    batch_size: int = 8,
    system: str | None = None,
) -> list[str]:
    """Answer each prompt; greedy when temperature == 0. Returns decoded replies without special tokens."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    texts = render_prompts(tokenizer, prompts, chat, system)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens must follow each prompt directly
    was_training = model.training
    model.eval()
    sampling = temperature > 0
    options = dict(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_k=(top_k or 0) if sampling else None,
        top_p=(top_p or 1.0) if sampling else None,
        eos_token_id=stop_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    replies = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=not chat)
            with torch.no_grad():
                out = model.generate(**batch, **options)
            new = out[:, batch["input_ids"].shape[1] :]
            replies += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return replies
