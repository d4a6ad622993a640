import os

# Test processes share two cores with the engine and server processes they start, and run many tiny ops: a
# spinning OpenMP team whose peer is descheduled makes each op ~10x slower, so idle threads sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# dtype=auto on CPU is measured per machine (engine/cpu_dtype.py); tests pin fp32 so they do not depend on it.
os.environ.setdefault("FLOWGATE_DTYPE", "float32")

# Triton reads this when kernels are defined: on a machine without CUDA the kernels run in its interpreter.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import json
from pathlib import Path

import pytest

# Heavy imports (torch, transformers) stay inside the fixtures: gateway tests check that importing the
# gateway leaves torch out of sys.modules, and this module is imported into every test process.

TINY_ARCHS = ("llama", "llama-mqa", "mistral", "qwen2")


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct, pulled into the real cache ($FLOWGATE_HOME) once."""
    from engine import assets

    return assets.pull("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """`tiny_model_dir(arch)` -> a saved random-weight HF model with tokenizer and chat template (built once).

    llama:     GQA 4/2 heads, llama3 rope scaling, tied embeddings, Llama-3 chat template (tools in a user turn)
    llama-mqa: MQA 4/1 heads, linear rope scaling, q/k/v/o and MLP biases, untied, Llama-3 template
    mistral:   head_dim 32 != hidden/heads, untied, Qwen-style tools template
    qwen2:     q/k/v bias, tied, Qwen-style tools template
    """
    built = {}

    def build(arch: str = "llama") -> Path:
        if arch not in built:
            built[arch] = _build_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return built[arch]

    return build


def _build_tiny_model(arch: str, path: Path) -> Path:
    import torch
    import transformers

    style = "llama3" if arch.startswith("llama") else "qwen"
    tokenizer, tokenizer_config, generation_config = _tiny_tokenizer(style)
    common = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        bos_token_id=generation_config.get("bos_token_id"),
        eos_token_id=generation_config["eos_token_id"],
    )
    config = _tiny_config(arch, common)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _randomize(model)
    model.save_pretrained(path)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (path / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
    return path


def _tiny_config(arch: str, common: dict):
    import transformers

    if arch == "llama":
        llama3_rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0}
        llama3_rope |= {"high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        return transformers.LlamaConfig(**common, rope_parameters=llama3_rope, tie_word_embeddings=True)
    if arch == "llama-mqa":
        return transformers.LlamaConfig(
            **common | {"num_key_value_heads": 1},
            rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0},
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=False,
        )
    if arch == "mistral":
        return transformers.MistralConfig(**common, head_dim=32, tie_word_embeddings=False)
    if arch == "qwen2":
        return transformers.Qwen2Config(**common, tie_word_embeddings=True)
    raise ValueError(f"unknown tiny architecture {arch!r} (known: {TINY_ARCHS})")


def _randomize(model) -> None:
    """Weights far from HF's tiny-std init, so that a wrong bias, norm or scale changes the logits visibly."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.2 * torch.randn_like(param))
            elif "embed_tokens" in name:
                param.copy_(torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) * param.shape[1] ** -0.5)


def _tiny_tokenizer(style: str):
    """A byte-level BPE trained on a few sentences, with the special tokens and pre-tokenizer regex of the real
    Llama-3 or Qwen2 tokenizer (transformers 5 rebuilds Qwen2's pipeline itself, so it must be the real one)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    special = {
        "llama3": "<|begin_of_text|> <|end_of_text|> <|start_header_id|> <|end_header_id|> <|eot_id|> <|eom_id|>",
        "qwen": "<|endoftext|> <|im_start|> <|im_end|>",
    }[style].split()
    digits = r"\p{N}{1,3}" if style == "llama3" else r"\p{N}"
    split_regex = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
        + digits
        + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tokenizer = Tokenizer(models.BPE())
    if style == "qwen":
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TINY_CORPUS.split("\n"), trainer)
    ids = {token: tokenizer.token_to_id(token) for token in special}
    if style == "llama3":
        bos = "<|begin_of_text|>"
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])]
        )
        tokenizer_config = {"bos_token": bos, "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE}
        eos = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]
        generation_config = {"bos_token_id": ids[bos], "eos_token_id": eos}
    else:
        tokenizer.add_tokens(
            [AddedToken("<tool_call>", normalized=False), AddedToken("</tool_call>", normalized=False)]
        )
        tokenizer_config = {
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": QWEN_TOOLS_TEMPLATE,
        }
        eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
        generation_config = {"eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"]}
    tokenizer_config |= {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    return tokenizer, tokenizer_config, generation_config


_TINY_CORPUS = """The quick brown fox jumps over the lazy dog.
What is the weather like in Paris today? It is sunny and 21 degrees.
Call the get_weather function with the city name and the unit, celsius or fahrenheit.
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
You are a helpful assistant. Answer the question in one short sentence.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024. Symbols: ( ) [ ] { } < > = + - * / , . ; : ! ? ' " _
The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid."""

# Condensed from Meta's Llama 3.2 template: bos_token, strftime_now, tojson(indent=4), raise_exception.
LLAMA3_TEMPLATE = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# Qwen2.5's template: tools as JSON lines in the system turn, <tool_call> blocks, grouped tool responses.
QWEN_TOOLS_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
