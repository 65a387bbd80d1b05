"""RMS norms through torch.rms_norm: only where the probe shows the same numbers, and then the same model."""
from __future__ import annotations

import copy

import pytest
import torch

from playground.model_changes import fuse_rms_norms
from playground.norms import fused_norms

from margins import DECIDED


def _llama(dtype=torch.float32):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-5)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype).eval()
    for m in model.modules():  # trained norms are not all ones
        if type(m).__name__.endswith("RMSNorm"):
            m.weight.data.uniform_(0.5, 1.5)
    return model


class OnePlusWeightRMSNorm(torch.nn.Module):
    """Gemma's form: the weight is an offset from one."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(d).uniform_(-0.5, 0.5))
        self.eps = 1e-6

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1 + self.weight)


def test_a_llamas_norms_run_in_one_call_and_its_logits_and_tokens_stay_the_same():
    model = _llama()
    ids = torch.randint(0, 300, (3, 9))
    with torch.inference_mode():
        before = model(ids).logits
        greedy_before = model.generate(ids[:1], do_sample=False, max_new_tokens=12, pad_token_id=0,
                                       output_scores=True, return_dict_in_generate=True)
    top2 = torch.cat(greedy_before.scores).topk(2, dim=-1).values  # the norms' rounding must not decide a token
    assert float((top2[:, 0] - top2[:, 1]).min()) > DECIDED
    greedy_before = greedy_before.sequences
    names = sorted(model.state_dict())
    assert fuse_rms_norms(model) == 2 * 3 + 1 == fused_norms(model)
    assert all(type(m).forward is not type(m).__mro__[1].forward
               for m in model.modules() if getattr(m, "one_call_rms_norm", False))
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, before, atol=1e-5)
        assert torch.equal(model.generate(ids[:1], do_sample=False, max_new_tokens=12, pad_token_id=0),
                           greedy_before)
    assert sorted(model.state_dict()) == names
    assert fuse_rms_norms(model) == 0  # already fused: left alone
    twin = copy.deepcopy(model)  # a fused model still copies like any module
    assert fused_norms(twin) == 7 and torch.equal(twin.model.norm.weight, model.model.norm.weight)


@pytest.mark.parametrize("layer", [OnePlusWeightRMSNorm(32), torch.nn.LayerNorm(32)],
                         ids=["one-plus-weight", "layernorm"])
def test_a_norm_with_another_formula_keeps_its_own_forward(layer):
    x = torch.randn(4, 32) * 3
    expected = layer(x)
    assert fuse_rms_norms(torch.nn.Sequential(layer)) == 0
    assert not getattr(layer, "one_call_rms_norm", False)
    assert torch.equal(layer(x), expected)


def test_a_half_precision_norm_whose_rounding_differs_keeps_its_own_forward():
    model = _llama(torch.bfloat16)
    probe = torch.randn(7, 64).to(torch.bfloat16)
    norm = model.model.norm
    same = torch.allclose(torch.rms_norm(probe, [64], norm.weight, 1e-5).float(), norm(probe).float(),
                          rtol=1e-5, atol=1e-6)
    fuse_rms_norms(model)
    assert getattr(norm, "one_call_rms_norm", False) == same


@pytest.mark.slow
def test_the_default_model_loads_with_every_norm_in_one_call(real_lm):
    assert fused_norms(real_lm.model) == 2 * real_lm.n_layers + 1
