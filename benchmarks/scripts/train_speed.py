"""Training throughput side by side: the same model, data, seed and schedule on the CPU, on CUDA in fp32, and on
CUDA with mixed precision (edgespec's default there), in one process. Prints images/s of the last epoch (the first
pays for cuDNN's algorithm search and allocator warm-up), the final validation top-1 of each, and each variant's
speed as a ratio to the CPU's.

    python benchmarks/scripts/train_speed.py                                   # resnet18 on 32x32 synthetic, 3 epochs
    python benchmarks/scripts/train_speed.py --model smallcnn --data digits --variants cpu,cuda-amp

Variants without a CUDA GPU are reported as skipped, never estimated. `--bare` also times a bare PyTorch loop
over the same model on preloaded tensors (no augmentation, no validation) on each device and prints edgespec's
images/s as a ratio to it:

    python benchmarks/train_speed.py --model smallcnn --data synthetic:size=28 --variants cpu --bare
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"cpu": {"device": "cpu"}, "cuda-fp32": {"device": "cuda", "amp": False},
            "cuda-amp": {"device": "cuda", "amp": True}}


def run_variant(name: str, args: argparse.Namespace, root: Path) -> dict:
    from toolkit.train import TrainConfig, train

    cfg = TrainConfig(data=args.data, model=args.model, epochs=args.epochs, batch_size=args.batch_size, seed=0,
                      workers=args.workers, **VARIANTS[name])
    t0 = time.perf_counter()
    train(cfg, root / name)
    wall = time.perf_counter() - t0
    history = json.loads((root / name / "metrics.json").read_text())
    return {"variant": name, "images_per_s": history[-1]["images_per_s"], "val_acc": history[-1]["val_acc"],
            "wall_s": wall}


def bare_loop(name: str, args: argparse.Namespace) -> float:
    """Images/s of the last of `args.epochs` epochs of forward, loss, backward and AdamW step over the training
    images preloaded as one normalised tensor on the device: what the model itself allows."""
    import torch

    from toolkit.data import prepare
    from toolkit.data.batched import BatchTransform, image_tensor
    from toolkit.models import create_model, input_size_for

    device = torch.device(VARIANTS[name]["device"])
    bundle = prepare(args.data, 0)
    size = input_size_for(args.model, bundle.source.size, None)
    ds = bundle.dataset("train")
    x = BatchTransform(bundle.source.augment, False, size, bundle.mean, bundle.std)(image_tensor(ds)).to(device)
    y = torch.as_tensor(ds.labels).to(device)
    torch.manual_seed(0)
    model = create_model(args.model, len(bundle.classes), bundle.source.channels, size[0], False).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    amp = VARIANTS[name].get("amp", True) and device.type == "cuda"
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = len(x) // args.batch_size
    for _ in range(args.epochs):
        order = torch.randperm(len(x), device=device)
        t0 = time.perf_counter()
        for k in range(steps):
            idx = order[k * args.batch_size:(k + 1) * args.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return steps * args.batch_size / wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--data", default="synthetic:groups=4,classes=3,per_class=200,size=32")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=None, help="loader workers for file-backed data [edgespec's]")
    p.add_argument("--variants", default="cpu,cuda-fp32,cuda-amp")
    p.add_argument("--bare", action="store_true", help="also time a bare PyTorch loop on preloaded tensors")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    import torch

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if VARIANTS[name]["device"] == "cuda" and not torch.cuda.is_available():
                results.append({"variant": name, "skipped": "no CUDA GPU visible"})
                continue
            results.append(run_variant(name, args, Path(tmp)))
            if args.bare:
                results[-1]["bare_images_per_s"] = round(bare_loop(name, args), 1)
    cpu = next((r for r in results if r["variant"] == "cpu" and "skipped" not in r), None)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"{args.model} on {args.data}, {args.epochs} epochs, batch {args.batch_size}, {args.workers} loader workers; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, GPU: {gpu}")
    print(f"{'variant':<10} {'img/s (last epoch)':>19} {'vs cpu':>8} {'val top-1':>10} {'wall s':>8}")
    for r in results:
        if "skipped" in r:
            print(f"{r['variant']:<10} skipped: {r['skipped']}")
            continue
        ratio = f"{r['images_per_s'] / cpu['images_per_s']:.1f}x" if cpu else "-"
        bare = ""
        if "bare_images_per_s" in r:
            b = r["bare_images_per_s"]
            bare = f"  bare loop {b:.1f} img/s, edgespec/bare {r['images_per_s'] / b:.2f}"
        print(f"{r['variant']:<10} {r['images_per_s']:>19.1f} {ratio:>8} {r['val_acc']:>10.4f} {r['wall_s']:>8.1f}"
              f"{bare}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "data": args.data, "gpu": gpu, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
