"""DAFT's batch-norm conversion (arXiv 2308.07728, methods.md 2): move running statistics to the group's
data while keeping every eval-mode output unchanged, so fine-tuning in train mode starts where the parent is."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)


def forward_batches(model, batches, device) -> None:
    """Run every batch (a tensor or an (images, labels) pair) through `model` in its current mode, for the
    statistics its hooks or batch-norm layers gather."""
    for batch in batches:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        model(x.to(device))


def batchnorm_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """BN layers the conversion applies to: those with running statistics and an affine transform."""
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            if m.running_mean is None or not m.affine:
                log.warning("batch-norm layer %s has no running statistics or no affine transform; not converted",
                            name)
                continue
            layers.append((name, m))
    return layers


@torch.no_grad()
def target_statistics(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu"
                      ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per BN layer: mean of the batch means and mean of the batch (unbiased) variances of its input.

    The model runs in eval mode, so every layer sees the input its source statistics produce (DAFT step 1-2).
    """
    layers = batchnorm_layers(model)
    sums: dict[str, list] = {name: [0, None, None] for name, _ in layers}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().to(torch.float64)
            dims = [d for d in range(x.dim()) if d != 1]
            count = x.numel() // x.shape[1]
            if count < 2:
                return  # an unbiased variance needs two values per channel
            mean = x.mean(dims)
            var = x.var(dims, unbiased=True)
            entry = sums[name]
            entry[0] += 1
            entry[1] = mean if entry[1] is None else entry[1] + mean
            entry[2] = var if entry[2] is None else entry[2] + var
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in layers]
    was_training = model.training
    model.eval()
    try:
        forward_batches(model, batches, device)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    stats = {}
    for name, (n, msum, vsum) in sums.items():
        if n:
            stats[name] = (msum / n, vsum / n)
    return stats


@torch.no_grad()
def convert_batchnorm(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> int:
    """Convert `model`'s BN layers in place to the statistics of `batches`; returns how many were converted.

    b' = b + (m_t - m_s) g / sqrt(v_s + eps), g' = g sqrt(v_t + eps) / sqrt(v_s + eps), running = (m_t, v_t):
    g'(x - m_t)/sqrt(v_t + eps) + b' == g(x - m_s)/sqrt(v_s + eps) + b for every x.
    """
    stats = target_statistics(model, batches, device)
    layers = dict(batchnorm_layers(model))
    for name, (m_t, v_t) in stats.items():
        bn = layers[name]
        dtype = bn.running_mean.dtype
        m_s, v_s = bn.running_mean.to(torch.float64), bn.running_var.to(torch.float64)
        g, b = bn.weight.to(torch.float64), bn.bias.to(torch.float64)
        src = torch.sqrt(v_s + bn.eps)
        new_b = b + (m_t - m_s) * g / src
        new_g = g * torch.sqrt(v_t + bn.eps) / src
        bn.weight.copy_(new_g.to(dtype))
        bn.bias.copy_(new_b.to(dtype))
        bn.running_mean.copy_(m_t.to(dtype))
        bn.running_var.copy_(v_t.to(dtype))
    if len(stats) < len(layers):
        log.warning("%d batch-norm layers saw no usable batch and keep their statistics", len(layers) - len(stats))
    log.info("batch-norm conversion: %d layers moved to the group's statistics", len(stats))
    return len(stats)


@torch.no_grad()
def adapt_statistics(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> nn.Module:
    """A copy of `model` whose BN running statistics are re-estimated on `batches`, the affine kept (AdaBN,
    Li et al. 2016): unlike `convert_batchnorm`, eval outputs change, toward the domain of `batches`.

    Each layer's statistics are a cumulative average over the batches (momentum None), seen with the
    earlier layers already adapted, as in a train-mode pass with no parameter update.
    """
    import copy

    adapted = copy.deepcopy(model)
    layers = batchnorm_layers(adapted)
    momenta = []
    for _, bn in layers:
        momenta.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None
    was_training = adapted.training
    adapted.eval()
    for _, bn in layers:
        bn.train()
    try:
        forward_batches(adapted, batches, device)
    finally:
        for (_, bn), momentum in zip(layers, momenta, strict=True):
            bn.momentum = momentum
        adapted.train(was_training)
    if any(int(bn.num_batches_tracked) == 0 for _, bn in layers):
        raise ValueError("adapt_statistics: some batch-norm layers saw no batch")
    log.info("AdaBN: %d batch-norm layers re-estimated on the target", len(layers))
    return adapted
