"""torch-consistency: consistency models in PyTorch (distillation, training, few-step sampling, editing)."""
