"""Recovery fine-tuning with knowledge distillation (Hinton et al., 2015), methods.md 4 step 3."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor, alpha: float,
                      temperature: float) -> torch.Tensor:
    """(1 - a) * CE(s, y) + a * T^2 * KL(softmax(t / T) || softmax(s / T)); plain CE without a teacher."""
    ce = F.cross_entropy(student, labels)
    if teacher is None or alpha == 0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True,
                  reduction="batchmean")
    return (1 - alpha) * ce + alpha * t * t * kl


class GroupLogits(nn.Module):
    """A teacher's logits at the group's classes, in the group's order (the generalist as teacher)."""

    def __init__(self, model: nn.Module, positions: list[int]):
        super().__init__()
        self.model = model
        self.register_buffer("positions", torch.as_tensor(positions, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).index_select(1, self.positions)


def finetune_epoch(model: nn.Module, teacher: nn.Module | None, loader, opt, sched, alpha: float,
                   temperature: float, device: torch.device, task) -> dict:
    """One epoch in train mode (batch-norm on batch statistics); the teacher stays in eval mode, without grads."""
    model.train()
    total, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        target = None
        if teacher is not None:
            with torch.no_grad():
                target = teacher(x)
        loss = distillation_loss(logits, target, y, alpha, temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        n = y.numel()
        total += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        task.advance(n, loss=loss.item(), img_s=seen / max(1e-9, time.perf_counter() - t0))
    return {"loss": total, "correct": correct, "seen": seen, "time": time.perf_counter() - t0}
