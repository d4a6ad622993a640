"""The AWQ quantizer's parts: int4 groups, the AutoAWQ packing round trip, the searches, scale folding, and the
per-layer reconstruction error against round-to-nearest on real calibration activations."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from engine.quant.awq import (
    LINEARS,
    SCALING_GROUPS,
    apply_scales,
    calibrate,
    clip_and_quantize,
    quantize_layer_rtn,
    scale_layer,
)
from engine.quant.calibration import calibration_windows, first_layer_inputs, read_text
from engine.quant.int4 import choose_group_size, fake_quantize, quantize_int4, to_awq_tensors
from engine.quant.search import InputStats, clip, output_error, search_clip, search_scales
from engine.tokenizer import Tokenizer
from kernels.awq_gemm import awq_dequantize_ref


def _outlier_activations(tokens: int, k: int, seed: int = 0) -> torch.Tensor:
    """LLM-like inputs: a few channels carry most of the magnitude."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=gen)
    x[:, torch.randperm(k, generator=gen)[: k // 32]] *= 30
    return x


def test_int4_groups_stay_within_half_a_step():
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(0))
    q = quantize_int4(w, 64)
    assert q.intweight.dtype == torch.int32 and q.scales.dtype == torch.float16
    assert q.intweight.min() >= 0 and q.intweight.max() <= 15 and q.zeros.max() <= 15
    step = q.scales.float().repeat_interleave(64, dim=1)
    assert ((w - q.dequantize()).abs() <= step / 2 + 1e-6).all()


def test_awq_layout_round_trips_through_the_kernel_reference():
    w = torch.randn(40, 128, generator=torch.Generator().manual_seed(1))
    q = quantize_int4(w, 32)
    packed = to_awq_tensors(q)
    assert packed["qweight"].shape == (128, 5) and packed["qweight"].dtype == torch.int32
    assert packed["qzeros"].shape == (4, 5) and packed["scales"].shape == (4, 40)
    dense = awq_dequantize_ref(packed["qweight"], packed["qzeros"], packed["scales"].float(), 32)
    assert torch.equal(dense.t(), q.dequantize())


@pytest.mark.parametrize(
    ("requested", "in_features", "expected"),
    [(128, [576, 1536], 64), (128, [896, 4864], 128), (64, [64, 128], 64), (128, [96, 160], 32)],
)
def test_group_size_falls_back_to_a_power_of_two_divisor(requested, in_features, expected):
    assert choose_group_size(requested, in_features) == expected


def test_group_size_without_a_usable_divisor_is_rejected():
    with pytest.raises(ValueError, match="no group size"):
        choose_group_size(128, [100])


def test_output_error_equals_the_error_on_the_activations():
    x = _outlier_activations(512, 128)
    w = torch.randn(24, 128)
    w_hat = fake_quantize(w, 32)
    stats = InputStats.zeros(128)
    for chunk in x.split(100):
        stats.update(chunk)
    direct = (x @ (w - w_hat).t()).pow(2).sum(1).mean()
    assert output_error(w, w_hat, stats.second_moment) == pytest.approx(direct.item(), rel=1e-4)


def test_scale_search_beats_round_to_nearest_on_outlier_channels():
    x = _outlier_activations(1024, 256)
    stats = InputStats.zeros(256)
    stats.update(x)
    weights = [torch.randn(64, 256), torch.randn(32, 256)]
    scales, error = search_scales(weights, stats, 64)
    rtn = sum(output_error(w, fake_quantize(w, 64), stats.second_moment) for w in weights)
    assert error < 0.7 * rtn
    assert scales[x.abs().mean(0).argmax()] > scales.median()  # salient channels are scaled up, not down


def _group_errors(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, G]: mean over tokens of each group's partial-output error (x_g · (w_g - ŵ_g))^2."""
    n, k = w.shape
    delta = (w - w_hat).reshape(n, k // group_size, group_size)
    partial = torch.einsum("tgi,ngi->tng", x.reshape(-1, k // group_size, group_size), delta)
    return partial.pow(2).mean(0)


def test_clip_search_lowers_each_groups_error():
    x = _outlier_activations(512, 128, seed=3)
    stats = InputStats.zeros(128)
    stats.update(x)
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(4))
    max_val = search_clip(w, stats.second_moment, 32)
    original_max = w.reshape(32, 4, 32).abs().amax(-1, keepdim=True)
    assert max_val.shape == (32, 4, 1)
    assert (max_val <= original_max).all() and (max_val > 0.5 * original_max).all()
    clipped = clip(w, max_val)
    with_clip = _group_errors(x, w, fake_quantize(clipped, 32), 32)
    without = _group_errors(x, w, fake_quantize(w, 32), 32)
    assert (with_clip <= without * (1 + 1e-4)).all()
    assert (max_val < original_max).float().mean() > 0.1  # clipping is chosen for a good share of groups
    assert with_clip.sum() < 0.98 * without.sum()


def _mha_layer_with_biases():
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
        attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    layer = LlamaDecoderLayer(config, layer_idx=0).eval()
    with torch.no_grad():
        for name, param in layer.named_parameters():
            param.copy_((1 + 0.2 * torch.randn_like(param)) if "norm" in name else 0.2 * torch.randn_like(param))
    return config, layer


@torch.inference_mode()
def test_folding_scales_preserves_the_layer_function():
    # MHA, so v_proj -> o_proj is foldable too; biases on every linear (up_proj's bias must be divided as well).
    config, layer = _mha_layer_with_biases()
    hidden = torch.randn(2, 10, 64)
    cos_sin = LlamaRotaryEmbedding(config)(hidden, torch.arange(10)[None])
    before = layer(hidden, position_embeddings=cos_sin, attention_mask=None)
    modules = dict(layer.named_modules())
    gen = torch.Generator().manual_seed(1)
    for group in SCALING_GROUPS:
        linears = [modules[name] for name in group.linears]
        apply_scales(modules[group.prev], linears, 0.25 + 4 * torch.rand(linears[0].in_features, generator=gen))
    after = layer(hidden, position_embeddings=cos_sin, attention_mask=None)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def _linear_inputs(layer, inputs) -> dict[str, torch.Tensor]:
    modules = dict(layer.named_modules())
    seen = {name: [] for name in LINEARS}
    hooks = [modules[n].register_forward_pre_hook(lambda _m, a, n=n: seen[n].append(a[0])) for n in LINEARS]
    with torch.inference_mode():
        for h, kw in zip(inputs.hidden, inputs.kwargs, strict=True):
            layer(h, **kw)
    for hook in hooks:
        hook.remove()
    return {n: torch.cat(xs).reshape(-1, modules[n].in_features) for n, xs in seen.items()}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_awq_reconstruction_error_is_at_most_rtn_per_layer(tiny_model_dir, arch):
    """Each group's output error, on the calibration activations as the layer really computes them
    (scaled inputs from folded norms and scaled weights), is no worse than round-to-nearest's."""
    path = tiny_model_dir(arch)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).requires_grad_(False)
    windows = calibration_windows(Tokenizer.from_dir(path), read_text(None), num_samples=8, seq_len=64)
    inputs = first_layer_inputs(model, windows, batch_size=4)
    group_size = 32
    improvements = []
    for layer in model.model.layers:
        original = copy.deepcopy(layer)
        x_fp = _linear_inputs(original, inputs)
        rtn = quantize_layer_rtn(original, group_size)
        stats, outputs = calibrate(layer, inputs)
        folded = scale_layer(layer, stats, group_size)
        x_scaled = _linear_inputs(layer, inputs)
        awq = clip_and_quantize(layer, stats, group_size)
        fp_modules = dict(original.named_modules())
        for group in SCALING_GROUPS:
            err_rtn = err_awq = 0.0
            for name in group.linears:
                reference = x_fp[name] @ fp_modules[name].weight.t()
                # v_proj and up_proj outputs are divided by the next group's scales, by design: undo that.
                awq_out = (x_scaled[name] @ awq[name].dequantize().t()) * folded.get(name, 1.0)
                err_rtn += (x_fp[name] @ rtn[name].dequantize().t() - reference).pow(2).sum().item()
                err_awq += (awq_out - reference).pow(2).sum().item()
            assert err_awq <= err_rtn * 1.001, (group, err_awq, err_rtn)
            improvements.append(err_awq / err_rtn)
        inputs = outputs
    assert min(improvements) < 0.95  # the search does something: not merely round-to-nearest again
