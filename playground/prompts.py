"""The five benchmark prompts (ALGORITHMS.md section 3 names "5 diverse prompts" but not their text).

The public benchmark's list is not part of our reference, so these are ours: the two prompts the
Phase-Slip seed quotes, its calibration prompt, and two of other registers (dialogue, exposition).
"""
BENCHMARK_PROMPTS: tuple[str, ...] = (
    "The ancient door creaked open",
    "The research paper described the finding that the",
    "Once upon a time",
    "\"I can't believe you did that,\" she said, and",
    "The most important thing to know about volcanoes is",
)
