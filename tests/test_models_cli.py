"""Model loading, the chat option, and the command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from playground.models import HUB_DEFAULT_ID, ModelLoadError, bundled_gguf, cache_dir, load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "playground", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def test_default_model_is_the_bundled_gguf_converted_once(real_lm):
    assert bundled_gguf() is not None
    assert "bundled" in real_lm.name
    converted = list((cache_dir() / "converted").glob("SmolLM2-135M-Instruct.Q4_1-*/model.safetensors"))
    assert converted, "the converted weights are kept in the cache folder"
    assert load_model() is real_lm and load_model("default") is real_lm
    assert (real_lm.n_layers, real_lm.n_heads, real_lm.n_kv_heads) == (30, 9, 3)
    assert real_lm.model.config._attn_implementation == "grouped"  # eager's numbers, no per-head cache copies


def test_unknown_model_id_names_the_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model"):
        load_model("no-such-org/no-such-model")


def test_chat_option_wraps_the_prompt(real_lm):
    plain = real_lm.encode("Hi there")
    chat = real_lm.tokenizer.decode(real_lm.encode("Hi there", chat=True))
    assert chat.startswith("<|im_start|>") and "user\nHi there<|im_end|>" in chat
    assert chat.rstrip().endswith("<|im_start|>assistant")
    assert real_lm.tokenizer.decode(plain) == "Hi there"


def test_cli_json_schema_and_set():
    out = cli("compare", "--prompt", "The ancient door creaked open", "--samplers", "greedy,temperature",
              "--seed", "0", "--max-new-tokens", "5", "--set", "temperature.top_k=0", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {"model", "seed", "columns"}
    assert [c["sampler"] for c in data["columns"]] == ["greedy", "temperature"]
    assert data["columns"][1]["settings"]["top_k"] == 0
    assert all(len(c["tokens"]) == 5 and c["metrics"]["tokens"] == 5 for c in data["columns"])


def test_cli_table_output():
    out = cli("compare", "--prompt", "Hello", "--samplers", "greedy", "--max-new-tokens", "3")
    assert out.returncode == 0, out.stderr
    assert "--- greedy (length)" in out.stdout and "perplexity" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--set", "temperature.top_q=1"], "unknown setting temperature.top_q"),
    (["--set", "temperature.top_k=lots"], "temperature.top_k must be int"),
    (["--set", "topk=3"], "expected SAMPLER.KEY=VALUE"),
    (["--set", "greedy.x=1"], "not in this run"),
    (["--samplers", "beam"], "unknown sampler 'beam'"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--model", "no-such-org/no-such-model"], "no-such-org/no-such-model"),
])
def test_cli_bad_input_exits_2_with_one_line(args, message):
    base = ["compare", "--prompt", "Hi", "--samplers", "temperature"]
    if "--samplers" in args:
        base = base[:3]
    out = cli(*base, *args)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], out.stderr


def test_hub_fallback_id_is_the_smollm2_instruct_repo():
    assert HUB_DEFAULT_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_unreachable_hub_fails_at_once_naming_the_model(monkeypatch):
    import socket

    from huggingface_hub import constants

    def no_dns(*args, **kwargs):
        raise socket.gaierror("no network")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ModelLoadError, match="'some-org/not-cached'.*not reachable"):
        load_model("some-org/not-cached")
