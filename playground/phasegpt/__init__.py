"""PhaseGPT at CPU scale: a character-level GPT with an optional Kuramoto phase-coupled layer.

data      the Shakespeare plays corpus (fetched once, checked by sha256) and its character vocabulary
model     the GPT, the phase-coupled layer in its public and fixed modes, step-by-step decoding
train     seeded, resumable training; teacher-forced and causal validation perplexity; R per token
grid      the Phase A rows at CPU scale and their table
causal_lm the shipped model as a playground model (``load_model("phasegpt")``): tokenizer, cache, loading
commands  ``python -m playground phasegpt train|eval|table|export``
"""
