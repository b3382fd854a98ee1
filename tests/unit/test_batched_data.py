"""Whole-batch augmentation against torchvision's per-image transforms: the same pixels for the same parameters,
the same distribution of parameters, seeded batches; the per-image path for files does not depend on workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from toolkit.data import prepare
from toolkit.data.batched import (
    AffineParams,
    BatchedLoader,
    BatchTransform,
    affine_batch,
    affine_theta,
    crop_batch,
    draw_affine,
    draw_crop_offsets,
    draw_resized_crops,
    resized_crop_batch,
)
from toolkit.data.datasets import augment_plan, build_transform


def _images(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_affine_batch_gives_torchvision_pixels_for_the_same_parameters():
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    x = _images(24, 3, 14, 12)
    p = draw_affine(augment_plan("digits", (14, 12)), 24, 14, 12, torch.Generator().manual_seed(1))
    theta = affine_theta(p)
    got = affine_batch(x, theta.float())
    mismatched = 0
    for i in range(24):
        args = dict(angle=float(p.angle[i]), translate=[int(p.tx[i]), int(p.ty[i])], scale=float(p.scale[i]),
                    shear=[0.0, 0.0])
        ref_theta = _get_inverse_affine_matrix([0.0, 0.0], inverted=True, **args)
        np.testing.assert_allclose(theta[i].flatten().numpy(), ref_theta, atol=1e-9)
        ref = TF.affine(x[i], **args, interpolation=v2.InterpolationMode.NEAREST, fill=0)
        mismatched += int((got[i] != ref).any(0).sum())
    assert mismatched <= 0.002 * 24 * 14 * 12  # nearest sampling: only float rounding at a pixel boundary may differ
    assert (got == 0).float().mean() > (x == 0).float().mean()  # pixels shifted in from outside are zero


def test_identity_affine_and_zero_translation_keep_the_image():
    x = _images(3, 1, 9, 9)
    ident = AffineParams(torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                         torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert torch.equal(affine_batch(x, affine_theta(ident).float()), x)
    shift = AffineParams(ident.angle, torch.tensor([2.0, 0, 0], dtype=torch.float64), ident.ty, ident.scale)
    out = affine_batch(x, affine_theta(shift).float())
    assert torch.equal(out[0, :, :, 2:], x[0, :, :, :-2]) and (out[0, :, :, :2] == 0).all()


def test_translation_only_affine_is_a_shift_with_the_same_pixels():
    from toolkit.data.batched import shift_batch

    x = _images(32, 3, 16, 16)
    p = draw_affine(augment_plan("synthetic", (16, 16)), 32, 16, 16, torch.Generator().manual_seed(4))
    assert p.tx.abs().max() >= 1 and (p.angle == 0).all() and (p.scale == 1).all()
    assert torch.equal(shift_batch(x, p.tx, p.ty), affine_batch(x, affine_theta(p).float()))


def test_crop_and_flip_give_torchvision_pixels():
    x = _images(16, 3, 16, 16)
    top, left = draw_crop_offsets(16, 2, torch.Generator().manual_seed(2))
    got = crop_batch(x, 2, top, left)
    for i in range(16):
        ref = TF.crop(TF.pad(x[i], [2, 2, 2, 2], fill=0), int(top[i]), int(left[i]), 16, 16)
        assert torch.equal(got[i], ref)
    tf = BatchTransform("natural", True, (16, 16), [0.0] * 3, [1.0] * 3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    out = tf((x * 255).round().to(torch.uint8), g1)
    top, left = draw_crop_offsets(16, 2, g2)
    flip = torch.rand(16, generator=g2) < 0.5
    cropped = crop_batch((x * 255).round() / 255, 2, top, left)
    for i in range(16):
        want = TF.horizontal_flip(cropped[i]) if flip[i] else cropped[i]
        torch.testing.assert_close(out[i], want, atol=1e-6, rtol=0)


def test_resized_crop_gives_torchvision_pixels():
    x = _images(8, 3, 64, 64)
    boxes = draw_resized_crops(8, 64, 64, torch.Generator().manual_seed(3))
    got = resized_crop_batch(x, boxes, (64, 64))
    for i in range(8):
        t, lf, h, w = (int(v) for v in boxes[i])
        ref = TF.resized_crop(x[i], t, lf, h, w, [64, 64], antialias=True)
        torch.testing.assert_close(got[i], ref, atol=2e-5, rtol=0)


def test_drawn_parameters_follow_torchvision_distributions():
    n, gen = 4000, torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    img = torch.zeros(1, 28, 28)
    plan = augment_plan("digits", (28, 28))
    ours = draw_affine(plan, n, 28, 28, gen)
    tv = v2.RandomAffine(degrees=8, translate=(0.1, 0.1), scale=(0.9, 1.1))
    ref = [tv.make_params([img]) for _ in range(n)]
    pairs = ((ours.angle, [r["angle"] for r in ref], 16), (ours.scale, [r["scale"] for r in ref], 0.2))
    for mine, theirs, width in pairs:
        theirs = np.asarray(theirs)
        assert mine.min() >= theirs.min() - 0.01 * width and mine.max() <= theirs.max() + 0.01 * width
        assert abs(float(mine.mean()) - theirs.mean()) < 0.03 * width
        assert abs(float(mine.std()) - theirs.std()) < 0.03 * width
    tx_ref = np.bincount(np.asarray([r["translate"][0] for r in ref]) + 3, minlength=7) / n
    tx_ours = np.bincount(ours.tx.long().numpy() + 3, minlength=7) / n
    np.testing.assert_allclose(tx_ours, tx_ref, atol=0.03)  # rounded pixel shifts -3..3 in the same proportions

    top, _ = draw_crop_offsets(n, 4, gen)
    crop = v2.RandomCrop((32, 32), padding=4)
    top_ref = [crop.make_params([torch.zeros(3, 32, 32)])["top"] for _ in range(n)]
    np.testing.assert_allclose(np.bincount(top.numpy(), minlength=9) / n, np.bincount(top_ref, minlength=9) / n,
                               atol=0.03)

    boxes = draw_resized_crops(n, 64, 64, gen).double()
    rrc = v2.RandomResizedCrop((64, 64), scale=(0.5, 1.0))
    ref_boxes = torch.tensor([[p["top"], p["left"], p["height"], p["width"]]
                              for p in (rrc.make_params([torch.zeros(3, 64, 64)]) for _ in range(n))]).double()
    area, ref_area = boxes[:, 2] * boxes[:, 3] / 64**2, ref_boxes[:, 2] * ref_boxes[:, 3] / 64**2
    assert area.min() >= 0.45 and area.max() <= 1.0
    assert abs(float(area.mean() - ref_area.mean())) < 0.01
    assert ((boxes[:, 0] + boxes[:, 2]) <= 64).all() and ((boxes[:, 1] + boxes[:, 3]) <= 64).all()
    assert abs(float(boxes[:, 0].mean() - ref_boxes[:, 0].mean())) < 0.5


@pytest.mark.parametrize("augment, size", [("digits", (8, 8)), ("synthetic", (16, 16)), ("natural", (16, 16)),
                                           ("natural", (64, 64)), ("handwriting", (12, 12))])
def test_batch_transform_shapes_and_ranges_and_eval_equals_the_per_image_path(augment, size):
    raw = (_images(6, 3, *size) * 255).round().to(torch.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    out = BatchTransform(augment, True, size, mean, std)(raw, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, *size) and out.dtype == torch.float32
    lo = min((0 - m) / s for m, s in zip(mean, std, strict=True))
    hi = max((1 - m) / s for m, s in zip(mean, std, strict=True))
    assert lo - 1e-5 <= float(out.min()) and float(out.max()) <= hi + 1e-5
    assert not torch.equal(out, BatchTransform(augment, True, size, mean, std)(raw, torch.Generator().manual_seed(1)))
    per_image = build_transform(augment, False, size, mean, std)
    batch = BatchTransform(augment, False, size, mean, std)(raw)
    for i in range(6):
        torch.testing.assert_close(batch[i], per_image(raw[i].permute(1, 2, 0).numpy()), atol=1e-6, rtol=0)


def test_resize_to_the_input_size_matches_the_per_image_path():
    raw = (_images(4, 1, 8, 8) * 255).round().to(torch.uint8)
    batch = BatchTransform("digits", False, (20, 20), [0.5], [0.25])(raw)
    per_image = build_transform("digits", False, (20, 20), [0.5], [0.25])
    for i in range(4):
        torch.testing.assert_close(batch[i], per_image(raw[i].permute(1, 2, 0).numpy()), atol=1e-5, rtol=0)


def _epoch(loader: BatchedLoader, gen: torch.Generator, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen.manual_seed(seed)
    return list(loader)


def test_batched_loader_keeps_the_data_loader_order_and_is_seeded():
    from torch.utils.data import DataLoader, RandomSampler

    bundle = prepare("digits")
    ds = bundle.dataset("train", train_transform=True)
    tf = BatchTransform(bundle.source.augment, True, bundle.input_size, bundle.mean, bundle.std)
    gen = torch.Generator()
    loader = BatchedLoader(ds, tf, 64, RandomSampler(ds, generator=gen), torch.device("cpu"), drop_last=True,
                           generator=gen)
    a, b, c = _epoch(loader, gen, 7), _epoch(loader, gen, 7), _epoch(loader, gen, 8)
    assert len(a) == len(loader) == len(ds) // 64
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0])
    gen.manual_seed(7)  # the images come in the order a DataLoader over the per-image dataset gives them
    ref = DataLoader(torch.as_tensor(ds.labels), batch_size=64, shuffle=True, generator=gen, drop_last=True)
    assert torch.equal(torch.cat([y for _, y in a]), torch.cat(list(ref)))
    assert a[0][0].shape == (64, 1, 8, 8)


def test_per_image_path_for_files_is_seeded_per_image_not_per_worker(tmp_path):
    from PIL import Image
    from torch.utils.data import DataLoader, RandomSampler

    from toolkit.train.data import SeededSampler

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    bundle = prepare(f"imagefolder:{tmp_path}")
    ds = bundle.dataset("train", train_transform=True)
    gen = torch.Generator()

    def epoch(workers: int, seed: int) -> torch.Tensor:
        gen.manual_seed(seed)
        loader = DataLoader(ds, batch_size=4, sampler=SeededSampler(RandomSampler(ds, generator=gen), gen),
                            num_workers=workers)
        return torch.cat([x for x, _ in loader])

    in_process = epoch(0, 3)
    assert torch.equal(in_process, epoch(1, 3))
    assert not torch.equal(in_process, epoch(0, 4))
