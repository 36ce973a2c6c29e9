"""Dynamics over frozen features: RLA-WM flow over latent actions, the real-to-latent action
controller, and the DINO-WM-style direct feature predictor baseline."""
from wm_gym.dynamics.controller import Controller, ControllerConfig
from wm_gym.dynamics.flow import FlowConfig, FlowDynamics
from wm_gym.dynamics.predictor import ActionPredictor, PredictorConfig

__all__ = ["Controller", "ControllerConfig", "FlowConfig", "FlowDynamics", "ActionPredictor", "PredictorConfig"]
