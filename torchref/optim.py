"""torch.optim for a specs.TrainConfig. Twin: jaxport/optim.py."""
from torch import optim


def make_optimizer(config, parameters):
    if config.optimizer == "sgd":
        return optim.SGD(parameters, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return optim.Adam(parameters, lr=config.lr, betas=config.betas, eps=config.eps)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
