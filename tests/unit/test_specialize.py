"""The invariants of methods.md 1-2: extraction, batch-norm conversion, suppression, label remapping."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from toolkit.data import stack
from toolkit.runs import Run
from toolkit.specialize.bn import batchnorm_layers, convert_batchnorm
from toolkit.specialize.extract import drop_suppressed, extract, suppress, with_new_head


def _inputs(run: Run, n: int = 64) -> torch.Tensor:
    x, _ = stack(run.data().dataset("test"), n)
    return x


@pytest.mark.parametrize("positions", [[3, 5, 9], [7, 0], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
def test_extracted_logits_are_the_generalists_bit_exact(digits_run, positions, assert_head_slice):
    run = Run.open(digits_run)
    gen = run.model().eval()
    spec = extract(gen, positions)
    x = _inputs(run)
    exact = assert_head_slice(spec, gen, positions, x)
    assert assert_head_slice(spec, gen, positions, torch.randn(16, *x.shape[1:]) * 3) == exact
    assert gen.fc.out_features == 10  # the generalist itself is untouched


def test_the_head_check_fails_on_a_wrong_slice(digits_run, assert_head_slice):
    run = Run.open(digits_run)
    gen = run.model().eval()
    with pytest.raises(AssertionError):
        assert_head_slice(extract(gen, [3, 5, 9]), gen, [3, 9, 5], _inputs(run, 8))
    nudged = extract(gen, [3, 5, 9])
    with torch.no_grad():
        nudged.fc.bias[0] += 1e-6
    with pytest.raises(AssertionError):
        assert_head_slice(nudged, gen, [3, 5, 9], _inputs(run, 8))


def test_extraction_on_synthetic_rgb(synthetic_run, assert_head_slice):
    run = Run.open(synthetic_run)
    gen = run.model().eval()
    assert_head_slice(extract(gen, [4, 2]), gen, [4, 2], _inputs(run, 32))


def test_new_head_is_fresh_and_sized(digits_run):
    gen = Run.open(digits_run).model()
    torch.manual_seed(0)
    a = with_new_head(gen, 3)
    assert a.fc.out_features == 3 and not torch.equal(a.fc.weight, gen.fc.weight[:3])
    z = with_new_head(gen, 3, zero=True)
    assert torch.count_nonzero(z.fc.weight) == 0 and torch.count_nonzero(z.fc.bias) == 0
    assert torch.equal(a.features[0][0].weight, gen.features[0][0].weight)


def _group_loader(run: Run, ids: list[int], batch_size: int = 64) -> DataLoader:
    ds = run.data().restrict(ids).dataset("train", train_transform=True)
    return DataLoader(ds, batch_size=batch_size)


def test_bn_conversion_keeps_eval_outputs_and_moves_statistics(digits_run):
    run = Run.open(digits_run)
    ids = [3, 5, 9]
    model = extract(run.model(), ids).eval()
    converted = extract(run.model(), ids).eval()
    x_group, _ = stack(run.data().restrict(ids).dataset("train"), 192)
    x_other = _inputs(run, 64)
    with torch.no_grad():
        train_before = copy.deepcopy(model).train()(x_group)  # a copy: train mode updates running stats
    torch.manual_seed(0)
    batches = list(_group_loader(run, ids))
    n = convert_batchnorm(converted, batches)
    assert n == len(batchnorm_layers(model)) == 3

    with torch.no_grad():
        for x in (x_group, x_other, torch.randn(8, *x_other.shape[1:]) * 2):
            diff = (model(x) - converted(x)).abs().max().item()
            assert diff <= 1e-5, diff

    # running statistics of the first layer are the mean of its per-batch input statistics on the group's data
    first = converted.features[0][1]
    conv = converted.features[0][0]
    with torch.no_grad():
        outs = [conv(b[0]) for b in batches]
    m_t = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    v_t = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    assert torch.allclose(first.running_mean, m_t, atol=1e-5)
    assert torch.allclose(first.running_var, v_t, rtol=1e-4, atol=1e-6)
    source = model.features[0][1]
    assert (first.running_mean - source.running_mean).abs().max() > 1e-3  # they moved to the group's data

    # the point of it: in train mode on group batches, outputs now stay near the eval-mode outputs
    with torch.no_grad():
        ref = model(x_group)
        train_after = copy.deepcopy(converted).train()(x_group)
    assert (train_after - ref).abs().mean() < 0.5 * (train_before - ref).abs().mean()


def test_bn_conversion_reports_no_layers_without_batchnorm():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    assert convert_batchnorm(model, [torch.randn(5, 4)]) == 0


def test_suppress_without_smoothing_is_extract_with_smoothing_it_is_not(digits_run, assert_head_slice):
    run = Run.open(digits_run)
    positions = [8, 1, 7]
    ext = extract(run.model(), positions)
    sup = suppress(run.model(), positions)
    x = _inputs(run, 48)
    with torch.no_grad():
        p_ext = torch.softmax(ext.eval()(x), 1)
        p_sup = torch.softmax(sup.eval()(x), 1)
    assert sup.fc.out_features == 10
    assert torch.allclose(p_sup[:, :3], p_ext, atol=1e-6)
    assert p_sup[:, 3:].max() == 0  # suppressed outputs get exactly zero probability
    assert_head_slice(drop_suppressed(sup), sup, [0, 1, 2], x)  # dropping them is exact

    ids = [run.class_ids[p] for p in positions]
    batches = list(_group_loader(run, ids, 32))[:4]

    def train(model, smoothing):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
        for xb, yb in batches:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        return drop_suppressed(model).eval()

    with torch.no_grad():
        ref = ext.eval()(x)
    a = train(extract(run.model(), positions), 0.0)
    b = train(suppress(run.model(), positions), 0.0)
    c = train(suppress(run.model(), positions), 0.2)
    d = train(extract(run.model(), positions), 0.2)
    with torch.no_grad():
        pa, pb, pc, pd = (torch.softmax(m(x), 1) for m in (a, b, c, d))
        moved = (a(x) - ref).abs().max()
    assert moved > 1e-2  # training did something
    assert torch.allclose(pa, pb, atol=1e-4)
    assert (pc - pd).abs().max() > 1e-3  # label smoothing spreads mass over the suppressed outputs


def test_label_remapping_round_trips(digits_run):
    run = Run.open(digits_run)
    ids = [9, 2, 6]
    bundle = run.data().restrict(ids)
    for split in ("train", "val", "test"):
        ds = bundle.dataset(split)
        src = bundle.source.labels[ds.indices]
        assert set(src.tolist()) == set(ids)
        assert np.array_equal(np.asarray(ids)[ds.labels], src)  # position -> generalist id
        assert sorted(set(ds.labels.tolist())) == [0, 1, 2]
    full_test = run.data().indices("test")
    keep = full_test[np.isin(run.data().source.labels[full_test], ids)]
    assert np.array_equal(bundle.indices("test"), keep)  # same images, same order as the generalist's
