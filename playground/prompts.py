"""The five benchmark prompts. The public Phase-Slip benchmark names "5 diverse prompts" but not their text.

So these are ours: the two prompts the public Phase-Slip description quotes, its calibration prompt,
and two of other registers (dialogue, exposition).
"""
BENCHMARK_PROMPTS: tuple[str, ...] = (
    "The ancient door creaked open",
    "The research paper described the finding that the",
    "Once upon a time",
    "\"I can't believe you did that,\" she said, and",
    "The most important thing to know about volcanoes is",
)
