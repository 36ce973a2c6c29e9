"""Latent actions from frozen features: RLA / LAM autoencoders, bottleneck regularisers, Seq-Δ-REPA."""
from wm_gym.latent_actions.autoencoder import (LatentActionAutoencoder, LatentActionConfig,
                                               LatentActionDecoder, LatentActionEncoder)
from wm_gym.latent_actions.regularizers import (LatentBottleneck, VectorQuantizer, gaussian_kl,
                                                sparse_energy, vcm_loss)
from wm_gym.latent_actions.seq_delta_repa import SeqDeltaRepa

__all__ = [
    "LatentActionAutoencoder", "LatentActionConfig", "LatentActionDecoder", "LatentActionEncoder",
    "LatentBottleneck", "VectorQuantizer", "gaussian_kl", "sparse_energy", "vcm_loss", "SeqDeltaRepa",
]
