"""World-model training: one loop for every stage, single process or torchrun DDP."""
