"""Reward functions on world-model features (batched torch)."""
