"""Agents: SB3 training and evaluation, planners."""
