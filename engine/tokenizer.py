"""A Hugging Face model directory's tokenizer and chat template, without torch or transformers.

Built on the `tokenizers` library (tokenizer.json) and jinja2. Chat templates render exactly as
transformers' `apply_chat_template(..., tokenize=False)` does: the same sandboxed environment, filters and
globals, None-valued message fields dropped, reasoning fields aliased, and the named special tokens
(bos_token, eos_token, ...) passed as template variables.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cached_property, lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

_NAMED_SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class Tokenizer:
    def __init__(self, backend: HFTokenizer, config: dict, generation_config: dict, chat_template):
        self._backend = backend
        self.special_tokens = {
            name: _token_content(config[name])
            for name in _NAMED_SPECIAL_TOKENS
            if config.get(name) is not None
        }
        self.chat_template = chat_template  # str, a {name: template} dict, or None
        self._generation_config = generation_config

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        config = _read_json(path / "tokenizer_config.json")
        template = config.get("chat_template")
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        elif (path / "chat_template.json").is_file():
            template = _read_json(path / "chat_template.json")["chat_template"]
        if isinstance(template, list):  # several named templates, e.g. "default" and "tool_use"
            template = {t["name"]: t["template"] for t in template}
        backend = HFTokenizer.from_file(str(path / "tokenizer.json"))
        return cls(backend, config, _read_json(path / "generation_config.json"), template)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self._backend.id_to_token(i) for i in ids]

    @cached_property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @cached_property
    def bos_token_id(self) -> int | None:
        return self._token_id(self.special_tokens.get("bos_token"))

    @cached_property
    def eos_token_ids(self) -> list[int]:
        """Every id that ends generation: generation_config.json's eos_token_id(s), then the eos_token."""
        ids = self._generation_config.get("eos_token_id")
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        eos = self._token_id(self.special_tokens.get("eos_token"))
        return [*ids, eos] if eos is not None and eos not in ids else ids

    @cached_property
    def all_special_ids(self) -> list[int]:
        """The named special tokens and every added token marked special: what decode() skips."""
        named = {self._token_id(t) for t in self.special_tokens.values()} - {None}
        added = {i for i, t in self._backend.get_added_tokens_decoder().items() if t.special}
        return sorted(named | added)

    @property
    def supports_tools(self) -> bool:
        templates = (
            self.chat_template.values() if isinstance(self.chat_template, dict) else [self.chat_template]
        )
        return any(t is not None and "tools" in t for t in templates)

    def apply_chat_template(
        self,
        messages: list[dict],
        tools: list[dict] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs,
    ) -> str:
        messages = _alias_reasoning_fields([{k: v for k, v in m.items() if v is not None} for m in messages])
        return _compiled(self._select_template(tools)).render(
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens, **template_kwargs},
        )

    def _select_template(self, tools) -> str:
        template = self.chat_template
        if isinstance(template, dict):
            template = (
                template["tool_use"]
                if tools is not None and "tool_use" in template
                else template.get("default")
            )
        if template is None:
            raise ValueError("this model's tokenizer has no chat template")
        return template

    def _token_id(self, token: str | None) -> int | None:
        return None if token is None else self._backend.token_to_id(token)


@lru_cache(maxsize=8)
def _compiled(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = _Namespace
    return env.from_string(template)


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; here it just renders."""

    tags = {"generation"}  # noqa: RUF012 - jinja's extension protocol

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """Jinja's namespace(), refusing underscore attributes (the sandbox's way into CPython internals)."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"namespace attribute {name!r} may not start with an underscore"
            )


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Unlike jinja's own tojson: no HTML escaping, and the json.dumps options templates pass.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _alias_reasoning_fields(messages: list[dict]) -> list[dict]:
    aliased = []
    for message in messages:
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased.append(message)
    return aliased


def _token_content(token) -> str:
    return token["content"] if isinstance(token, dict) else str(token)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
