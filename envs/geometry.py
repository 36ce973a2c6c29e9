"""Small geometry helpers shared by the sims."""
from __future__ import annotations

import numpy as np


def wrap_angle(angle):
    """Map angles to [-π, π), so 2π − 0.05 and 0.05 are 0.1 apart."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi
