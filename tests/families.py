"""Tiny random models of every supported family, built from their transformers config classes (no download).

Each is 2 layers, hidden 64, with the embedded model's byte-level BPE plus the family's own special tokens,
chat template (the model card's, trimmed of tool calling) and EOS/pad conventions, so the quirks a user's
real model brings are here: Gemma's template refuses a system role and turns are `model`; Qwen has no BOS
and pads with <|endoftext|>; Llama 3 ends a turn with <|eot_id|> and scales rope; Phi-3 fuses q/k/v and
gate/up and ends a turn with <|end|> while its eos is <|endoftext|>; Qwen2 has q/k/v biases; Qwen3 and
Gemma 3 normalise q and k; Gemma 2 soft-caps its logits; Mistral and Gemma slide a window.

    build_family_model("qwen2", folder)  # -> folder, a save_pretrained directory with its tokenizer
"""

from __future__ import annotations

from pathlib import Path

# the test models' shape everywhere (Llama fixtures, merges, exports and every family): small enough for a step in milliseconds
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")

LLAMA3_TEMPLATE = (  # Llama 3.2 Instruct's: a system turn always, opening with the knowledge cut-off and today's date
    '{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}'
    '{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}{%- endif %}'
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    '{%- else %}{%- set system_message = "" %}{%- endif %}'
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}{{- "Cutting Knowledge Date: December 2023\\n" }}'
    '{{- "Today Date: " + date_string + "\\n\\n" }}{{- system_message }}{{- "<|eot_id|>" }}'
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message is defined %}{{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token}}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}"
    "{%- endif %}{%- endfor %}"
)
QWEN2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}"
    '{%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}'
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}{%- set content = message.content.split('</think>')[-1].lstrip('\n') %}"
    "{{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}"
)
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    '{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = "" -%}{%- set loop_messages = messages -%}{%- endif -%}'
    "{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    '{{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}{%- endif -%}'
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# family -> (special tokens to add, bos, eos, pad, end-of-turn token, chat template)
TOKENS = {
    "llama": (
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        None,
        "<|eot_id|>",
        LLAMA3_TEMPLATE,
    ),
    "mistral": (["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", None, "</s>", MISTRAL_TEMPLATE),
    "qwen2": ([], None, "<|im_end|>", "<|endoftext|>", "<|im_end|>", QWEN2_TEMPLATE),
    "qwen3": ([], None, "<|im_end|>", "<|endoftext|>", "<|im_end|>", QWEN3_TEMPLATE),
    "gemma2": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", "<pad>", "<end_of_turn>", GEMMA2_TEMPLATE),
    "gemma3": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", "<pad>", "<end_of_turn>", GEMMA3_TEMPLATE),
    "phi3": (["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<s>", "<|endoftext|>", "<|endoftext|>", "<|end|>", PHI3_TEMPLATE),
}


def family_tokenizer(family: str, base):
    """The embedded model's tokenizer dressed as `family`'s: its special tokens, template, bos/eos/pad."""
    import copy

    added, bos, eos, pad, _, template = TOKENS[family]
    tokenizer = copy.deepcopy(base)
    if added:
        tokenizer.add_special_tokens({"additional_special_tokens": added})
    tokenizer.bos_token, tokenizer.eos_token = bos, eos
    tokenizer.pad_token = pad
    tokenizer.chat_template = template
    if family == "phi3":  # Phi-3's special tokens eat the whitespace after them (rstrip), in transformers and in llama.cpp
        tokenizer = _rstrip_special_tokens(tokenizer)
    return tokenizer


def _rstrip_special_tokens(tokenizer):
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    for token in spec["added_tokens"]:
        token["rstrip"] = token["rstrip"] or token["special"]
    special = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    rebuilt = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), **special)
    rebuilt.chat_template = tokenizer.chat_template
    return rebuilt


def family_config(family: str, tokenizer):
    """The family's transformers config at test size (2 layers, hidden 64, 4 heads, 2 kv heads)."""
    import transformers as tf

    ids = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id}
    ids["pad_token_id"] = tokenizer.pad_token_id
    size = dict(**TINY, max_position_embeddings=512)
    end_of_turn = tokenizer.convert_tokens_to_ids(TOKENS[family][4])
    if family == "llama":  # Llama 3.1/3.2: rope scaled with the llama3 rule, tied embeddings (3.2 1B)
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
        return tf.LlamaConfig(**size, **ids, rope_parameters=rope, tie_word_embeddings=True)
    if family == "mistral":
        return tf.MistralConfig(**size, **ids, sliding_window=64, tie_word_embeddings=False)
    if family == "qwen2":  # biases on q/k/v
        return tf.Qwen2Config(**size, **ids, tie_word_embeddings=True)
    if family == "qwen3":  # head_dim set apart from hidden/heads, q/k RMS norms
        return tf.Qwen3Config(**size, **ids, head_dim=32, tie_word_embeddings=True)
    if family == "gemma2":  # soft-capping, sliding/full layers, norms around attention and MLP, embeddings scaled by sqrt(hidden)
        config = tf.Gemma2Config(
            **size, **ids, head_dim=16, query_pre_attn_scalar=16, sliding_window=32, attn_logit_softcapping=50.0, final_logit_softcapping=30.0
        )
        config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
        return config
    if family == "gemma3":
        config = tf.Gemma3TextConfig(
            **size, **ids, head_dim=16, query_pre_attn_scalar=16, sliding_window=32, layer_types=["sliding_attention", "full_attention"]
        )
        config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
        return config
    if family == "phi3":  # fused qkv_proj and gate_up_proj, untied
        config = tf.Phi3Config(**size, **ids, tie_word_embeddings=False, sliding_window=None)
        config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
        return config
    raise ValueError(f"unknown family {family}")


def build_family_model(family: str, folder, base_tokenizer, seed: int = 0) -> str:
    """Save a tiny random `family` model and its tokenizer to `folder`; returns the folder as a string."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = family_tokenizer(family, base_tokenizer)
    config = family_config(family, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if isinstance(config.eos_token_id, list):
        model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    with torch.no_grad():  # random norms and biases, so a missing +1 offset or bias shows in the logits
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def as_llama_cpp_runs_gemma3(model_dir, folder) -> Path:
    """The same Gemma 3 weights with the layer pattern llama.cpp hard-codes (every 6th layer full: SS for 2 layers).

    The fixture's layer types are SF, which llama.cpp cannot run: it reads no pattern from the file.
    """
    import json
    import shutil

    folder = Path(folder)
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["layer_types"] = ["sliding_attention"] * config["num_hidden_layers"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def small_bpe(words: str, pre_tokenizer, **special):
    """A ~400-token byte-level BPE trained on `words` with ChatML specials (eos <|im_end|>, unk <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([words], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", unk_token="<|endoftext|>", **special)
