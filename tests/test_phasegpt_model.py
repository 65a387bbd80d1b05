"""The shipped PhaseGPT as a playground model: loading, its documented perplexity, every sampler through the
Engine, the oscillators' own R, the cache's running sums under prefill, steps and row re-indexing."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from margins import assert_greedy_decided
from test_phasegpt import TEXT, tiny_config, tiny_training
from playground import load_model
from playground.columns import ColumnSpec
from playground.engine import Engine, RunOptions
from playground.errors import PlaygroundError
from playground.models import PHASEGPT_MODEL
from playground.phasegpt import data
from playground.phasegpt.causal_lm import export_checkpoint, load_shipped
from playground.phasegpt.data import shakespeare
from playground.phasegpt.train import CHECKPOINT, teacher_forced, train, windows
from playground.samplers import SAMPLERS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "phasegpt.md"
PROMPT = "ROMEO:\nBut soft, what light"


@pytest.fixture(scope="module")
def lm():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model: one thread is fastest, and spares a shared machine's other core
    yield load_model(PHASEGPT_MODEL)
    torch.set_num_threads(threads)


def oscillator_R(lm, ids: list[int]) -> torch.Tensor:
    """R per position of ``ids`` from the GPT's own full-sequence forward: the phase layer's final phases."""
    gpt = lm.model.gpt
    with torch.no_grad():
        phases = gpt(torch.tensor([ids])).phases
    return gpt.phase_layer.token_order_parameter(phases)[0]


def test_the_shipped_model_loads_as_a_64_character_model(lm):
    assert lm.n_layers == 7 and lm.max_context == 64 and len(lm.tokenizer) == 76 and lm.eos_ids == set()
    assert lm.oscillator_layers == [4] and lm.model.config.phase_mode == "fixed"
    assert load_model(PHASEGPT_MODEL, dtype="bfloat16").dtype == torch.float32  # its running sums need float32
    ids = lm.encode(PROMPT)
    assert len(ids) == len(PROMPT) and lm.tokenizer.decode(ids) == PROMPT
    assert lm.order_parameter_source(4).startswith("oscillator R") and lm.order_parameter_source(3).startswith(
        "attention R")
    with pytest.raises(PlaygroundError, match="exceeds the model's context of 64 tokens"):
        Engine(lm).run(PROMPT, ["greedy"], RunOptions(max_new_tokens=64 - len(PROMPT) + 1))
    with pytest.raises(PlaygroundError, match="'é'"):
        Engine(lm).run("Roméo", ["greedy"], RunOptions(max_new_tokens=4))


def test_its_validation_perplexity_is_the_documented_figure(lm):
    documented = re.search(r"shipped model's validation perplexity is \*\*([0-9.]+)\*\*", DOCS.read_text()).group(1)
    measured = teacher_forced(lm.model.gpt, windows(shakespeare().val, lm.max_context)).perplexity
    assert f"{measured:.2f}" == f"{float(documented):.2f}"


def test_every_sampler_runs_and_its_R_is_the_oscillators_own(lm):
    run = Engine(lm).run(PROMPT, list(SAMPLERS), RunOptions(max_new_tokens=8, seed=3))
    for col in run.columns:
        assert len(col.tokens) == 8 and col.finish_reason == "length", col.label
        direct = oscillator_R(lm, run.prompt_ids + col.tokens)
        for t, row in enumerate(col.rows):  # token t was decided after position n_prompt - 1 + t
            assert 0.0 <= row.order_parameter <= 1.0
            assert row.order_parameter == row.order_parameter_layers[4]
            assert abs(row.order_parameter - float(direct[run.n_prompt - 1 + t])) < 1e-5, (col.label, t)


def test_prefill_and_step_by_step_decoding_agree(lm):
    """In float64, so that 1e-5 measures the decoding, not float32's rounding of logits near 10."""
    model = copy.deepcopy(lm.model).double()
    ids = torch.tensor(lm.encode(PROMPT + " doth yonder window break?"))
    with torch.no_grad():
        full = model.gpt(ids[None])
        cache = DynamicCache(config=model.config)
        out = model(ids[None, :10], cache=cache)
        logits, order = [out.logits[:, -1]], []
        for t in range(10, len(ids)):
            out = model(ids[None, t:t + 1], cache=cache, output_attentions=True)
            logits.append(out.logits[:, -1])
            order.append(out.oscillator_order_parameter[0, -1, 0])
    assert (torch.stack(logits, 1) - full.logits[:, 9:]).abs().max() < 1e-5
    direct = model.gpt.phase_layer.token_order_parameter(full.phases)[0, 10:]
    assert (torch.stack(order) - direct).abs().max() < 1e-5
    weights = out.attentions[4][0, :, -1]  # the mean field: every position weighted alike
    assert torch.allclose(weights, torch.full_like(weights, 1 / len(ids)))


def test_a_dropped_row_leaves_the_others_running_sums_right(lm):
    """Three rows in one cache, the middle one dropped by re-indexing: the others continue as if alone."""
    model = copy.deepcopy(lm.model).double()
    ids = torch.tensor([lm.encode(p.ljust(10)) for p in ("KING:\nWhat", "QUEEN:\nNay", "FOOL:\nAye")])
    following = torch.tensor([[3], [5]])
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(ids, cache=cache)
        cache.batch_select_indices(torch.tensor([0, 2]))
        together = model(following, cache=cache)
        for row, prompt_ids in enumerate(ids[[0, 2]]):
            full = model.gpt(torch.cat([prompt_ids, following[row]])[None])
            assert (together.logits[row, -1] - full.logits[0, -1]).abs().max() < 1e-5
            direct = model.gpt.phase_layer.token_order_parameter(full.phases)[0, -1]
            assert abs(float(together.oscillator_order_parameter[row, -1, 0]) - float(direct)) < 1e-5


def test_a_column_in_a_batch_decodes_as_it_does_alone(lm):
    """Side rows (Phase-Slip), lookahead candidates (adaptive) and greedy share one cache, re-indexed as
    rows come and go: each column's tokens and R equal that column run alone."""
    specs = [ColumnSpec("greedy"), ColumnSpec("phase_slip", {"temperature": 0.0}),
             ColumnSpec("adaptive_entropy", {"cold_point": 1.9, "hot_point": 1.95})]  # COLD: a lookahead a step
    options = RunOptions(max_new_tokens=16, seed=5)
    together = Engine(lm).run(PROMPT, specs, options)
    assert any(len(row.extra.get("lookahead_scores", [])) >= 2 for row in together.columns[2].rows)
    for spec, col in zip(specs, together.columns):
        if spec.sampler == "greedy":
            assert_greedy_decided(col.rows)
        alone = Engine(lm).run(PROMPT, [spec], options).columns[0]
        assert alone.tokens == col.tokens, spec.sampler
        assert [round(r.order_parameter, 5) for r in alone.rows] == [round(r.order_parameter, 5) for r in col.rows]


def test_a_trained_checkpoint_exports_as_a_model_with_its_logits(tmp_path):
    corpus = data.CharCorpus.of(TEXT)
    config = tiny_config("fixed", vocab_size=len(corpus.vocab))
    state = train(corpus, config, tiny_training(steps=10), tmp_path / "run", progress=False)
    with pytest.raises(PlaygroundError, match="still training"):
        train(corpus, config, tiny_training(steps=20), tmp_path / "half", until=10, progress=False)
        export_checkpoint(tmp_path / "half" / CHECKPOINT, tmp_path / "refused")
    model, tokenizer = load_shipped(torch.device("cpu"), export_checkpoint(tmp_path / "run" / CHECKPOINT,
                                                                         tmp_path / "shipped"))
    ids = torch.tensor([tokenizer.encode("All:\nSpeak.")])
    state.model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, state.model(ids).logits)
    assert tokenizer.chars == corpus.vocab.chars and model.config.oscillator_layers == [config.phase_layer]


def test_the_page_offers_it_everywhere_and_says_which_R_it_has(lm, monkeypatch):
    from playground.ui import backend

    monkeypatch.setenv("SPACE_ID", "someone/playground")  # a deployment with a short allow-list
    monkeypatch.delenv("PLAYGROUND_ALLOWED_MODELS", raising=False)
    assert backend.check_model(PHASEGPT_MODEL) == PHASEGPT_MODEL
    assert "oscillator R (PhaseGPT's phase layer, layer 4)" in backend.order_parameter_note(PHASEGPT_MODEL)
    assert "attention R" in backend.order_parameter_note("someone/unloaded-model")
