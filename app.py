"""Hugging Face Spaces entry point: launches the sampler playground (all logic is in playground/)."""
from playground.ui import launch

if __name__ == "__main__":
    launch()
