"""Stage 3: SAEs per (model, layer): trained with SAELens or loaded pretrained."""

from saematch.sae.evaluate import SAEEval
from saematch.sae.load import check_fits, load_pretrained, load_sae_dir
from saematch.sae.train import TrainResult, make_training_sae, train_sae

__all__ = ["SAEEval", "TrainResult", "check_fits", "load_pretrained", "load_sae_dir", "make_training_sae", "train_sae"]
