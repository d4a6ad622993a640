"""Calibration data: token windows of a text, and the inputs they give the first decoder layer.

The default text (calibration.txt, shipped with the package) is varied English prose, dialogue, lists and a
little code; it shares nothing with the held-out text that `flowgate bench quantize` measures on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.tokenizer import Tokenizer

DEFAULT_CALIBRATION = Path(__file__).with_name("calibration.txt")


@dataclass(frozen=True)
class LayerInputs:
    """The first decoder layer's inputs, one entry per batch of calibration windows."""

    hidden: list[torch.Tensor]  # [batch, seq_len, hidden]
    kwargs: list[dict]  # what the model passes each layer beside the hidden states (rotary cos|sin, mask)


def calibration_windows(
    tokenizer: Tokenizer, text: str, num_samples: int, seq_len: int
) -> torch.Tensor:
    """[num_samples, seq_len] token windows spread evenly over the text (overlapping when it is short)."""
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise ValueError("the calibration text is empty")
    seq_len = min(seq_len, len(ids))
    last_start = len(ids) - seq_len
    starts = torch.linspace(0, last_start, num_samples).round().long().unique()
    tokens = torch.tensor(ids)
    return torch.stack([tokens[s : s + seq_len] for s in starts.tolist()])


class _Caught(Exception):
    """Raised by the hook on the first decoder layer: the rest of the model need not run."""


@torch.inference_mode()
def first_layer_inputs(hf_model, windows: torch.Tensor, batch_size: int) -> LayerInputs:
    """Run the embedding and the model's per-step preparation, catching what the first layer receives."""
    caught: dict = {}

    def catch(_module, args, kwargs):
        caught["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        caught["kwargs"] = kwargs
        raise _Caught

    hidden, kwargs = [], []
    handle = hf_model.model.layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for batch in windows.split(batch_size):
            try:
                hf_model.model(input_ids=batch, use_cache=False)
            except _Caught:
                hidden.append(caught["hidden"])
                kwargs.append(caught["kwargs"])
    finally:
        handle.remove()
    return LayerInputs(hidden, kwargs)


def read_text(path: Path | None) -> str:
    return (path or DEFAULT_CALIBRATION).read_text(encoding="utf-8")
