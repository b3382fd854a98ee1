"""Structured channel pruning with Torch-Pruning's dependency graph (DepGraph, CVPR 2023), methods.md 4 steps 1-2.

Whole channels go: every layer that must shrink together (residual adds, depthwise convs, concatenations) is one
group in Torch-Pruning's graph, ranked by its importance on the group's own data. The class head is ignored, so
the output shape and class order stay. A target is reached the way Torch-Pruning's benchmarks do it
(`progressive_pruning`): many small pruning steps, MACs or parameters counted after each, until the target is met.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..models import get_head
from ..specialize.bn import forward_batches

log = logging.getLogger(__name__)

GRANULARITY = 100  # pruner steps from 0 to MAX_PRUNING_RATIO of every group's channels: ~1% of channels each
MAX_PRUNING_RATIO = 0.9  # never remove more than 90% of a group's channels: a layer must survive
IMPORTANCES = ("taylor", "group-norm")


def count(model: nn.Module, chw: tuple[int, int, int]) -> tuple[int, int]:
    """(MACs, parameters) of one image, counted by Torch-Pruning."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *chw))
    return int(macs), int(params)


def taylor_gradients(model: nn.Module, batches: Iterable, device: torch.device) -> None:
    """Gradients of the group's loss for first-order Taylor importance |w * dL/dw| (eval mode: BN statistics kept)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    n = 0
    for x, y in batches:
        loss = loss_fn(model(x.to(device)), y.to(device))
        loss.backward()
        n += len(y)
    for p in model.parameters():
        if p.grad is not None:
            p.grad /= max(1, n)


def _importance(name: str):
    import torch_pruning as tp

    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


def _node_name(node: Any, names: dict[nn.Module, str]) -> str | None:
    """The nearest named layer at or upstream of a Torch-Pruning graph node."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop(0)
        if id(n) in seen:
            continue
        seen.add(id(n))
        if getattr(n, "module", None) in names:
            return names[n.module]
        todo += list(getattr(n, "inputs", []))
    return None


def _culprit(exc: BaseException, model: nn.Module) -> str:
    """Where in `model` a Torch-Pruning failure happened, from the graph node its code was handling."""
    from torch_pruning.dependency.node import Node

    names = {m: n for n, m in model.named_modules() if n}
    tb, found = exc.__traceback__, None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, Node):
                found = value
            elif isinstance(value, nn.Module) and value in names:
                found = found or value
        tb = tb.tb_next
    if isinstance(found, nn.Module):
        return f"layer {names[found]}"
    if found is not None:
        near = _node_name(found, names)
        op = str(getattr(found, "type", "op")).rsplit(".", 1)[-1].lower()
        return f"a {op} after layer {near}" if near else f"node {found}"
    return "an unknown layer"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def make_pruner(model: nn.Module, chw: tuple[int, int, int], importance: str, round_to: int, arch: str,
                ignored: list[nn.Module] | None = None):
    """Torch-Pruning's BasePruner over `model`, `ignored` (default: the class head) kept whole; untraceable models
    are a UserError."""
    import torch_pruning as tp

    if importance not in IMPORTANCES:
        raise UserError(f"unknown importance {importance!r}; choose one of: {', '.join(IMPORTANCES)}")
    try:
        return tp.pruner.BasePruner(model, torch.zeros(1, *chw), _importance(importance), pruning_ratio=1.0,
                                    max_pruning_ratio=MAX_PRUNING_RATIO, iterative_steps=GRANULARITY,
                                    ignored_layers=ignored if ignored is not None else [get_head(model)],
                                    round_to=round_to)
    except Exception as exc:  # noqa: BLE001 - the graph builder raises anything; the user needs the layer
        raise UserError(f"Torch-Pruning cannot trace {arch}: its dependency graph fails at {_culprit(exc, model)} "
                        f"({_first_line(exc)}); compress another architecture") from None


def check_forward(model: nn.Module, chw: tuple[int, int, int], num_classes: int, arch: str,
                  expected: tuple[int, ...] | None = None) -> None:
    """Run the pruned model once; a layer whose shapes Torch-Pruning could not follow is named. The output (the
    first of a tuple) must have the shape `expected` for a batch of 2 (default: a classifier's (2, num_classes))."""
    stack: list[str] = []
    hooks = []

    def leave(_m, _a, _o) -> None:  # a forward hook that returned something would replace the output
        stack.pop()

    for name, m in model.named_modules():
        if name:
            hooks.append(m.register_forward_pre_hook(lambda _m, _a, n=name: stack.append(n)))
            hooks.append(m.register_forward_hook(leave))
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *chw, device=next(model.parameters()).device))
    except Exception as exc:  # noqa: BLE001 - any failure here is a layer pruning broke
        where = stack[-1] if stack else "the model's own forward"
        raise UserError(f"pruning broke {arch} at layer {where} ({_first_line(exc)}): Torch-Pruning cannot follow "
                        "its shapes; compress another architecture") from None
    finally:
        for h in hooks:
            h.remove()
    out = out[0] if isinstance(out, tuple) else out
    if tuple(out.shape) != (expected or (2, num_classes)):
        raise UserError(f"pruning changed {arch}'s output to {tuple(out.shape)[1:]}; compress another architecture")


def prune_to(model: nn.Module, chw: tuple[int, int, int], *, target: str, ratio: float, base: int, importance: str,
             round_to: int, arch: str, num_classes: int, grad_batches: Iterable | None = None,
             ignored: list[nn.Module] | None = None, check: Callable[[nn.Module], None] | None = None,
             gradients: Callable[[nn.Module], None] | None = None) -> dict[str, Any]:
    """Prune `model` in place until its MACs (or parameters, `target`) are at most `ratio` * `base`.

    `ignored`: layers kept whole (default: the class head); `check`: runs the pruned model and raises a UserError
    naming what broke (default: check_forward, a classifier's output shape). Taylor importance needs the
    gradients of the run's loss on its own data: `gradients(model)` computes them (a detector's, from its task's
    loss), else the cross-entropy over `grad_batches` (a classifier's).

    Returns what was reached. Stops early when no group can shrink any further (every group at the
    maximum ratio, or rounding leaves nothing to remove). Runs on the CPU (the graph, the counter and the
    few importance batches); the caller moves the model back.
    """
    model.cpu()
    pruner = make_pruner(model, chw, importance, round_to, arch, ignored)
    check = check or (lambda m: check_forward(m, chw, num_classes, arch))
    if importance == "taylor":
        if gradients is not None:
            gradients(model)
        else:
            taylor_gradients(model, grad_batches or [], torch.device("cpu"))
    which = 0 if target == "macs" else 1
    goal = ratio * base
    current = count(model, chw)
    small_steps = 0
    while current[which] > goal and pruner.current_step < pruner.iterative_steps:
        try:
            pruner.step()
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"Torch-Pruning failed on {arch} at {_culprit(exc, model)} ({_first_line(exc)}); "
                            "compress another architecture") from None
        small_steps += 1
        try:
            current = count(model, chw)
        except Exception:  # noqa: BLE001 - the pruned graph no longer runs: name the layer
            check(model)
            raise
    model.zero_grad(set_to_none=True)
    check(model)
    log.info("pruned %s in %d small steps: %.3g MACs, %.3g parameters (%s ratio %.3f, asked %.3f)", arch, small_steps,
             current[0], current[1], target, current[which] / base, ratio)
    return {"macs": current[0], "params": current[1], "reached": current[which] / base, "small_steps": small_steps}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> int:
    """Batch-norm running statistics measured anew on `batches` (cumulative averages, train-mode forward passes).

    Removing channels shifts what every later batch-norm layer sees; its stale statistics then mis-normalise.
    Unlike DAFT's conversion (which keeps the eval output, and so the damage), this changes the eval output
    toward what the pruned layers actually produce; affine weights are kept.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    was_training = model.training
    model.train()
    try:
        forward_batches(model, batches, device)
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return len(layers)
