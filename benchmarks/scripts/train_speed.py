"""Training throughput side by side: the same model, data, seed and schedule on the CPU, on CUDA in fp32, and on
CUDA with mixed precision (edgespec's default there), in one process. Prints images/s of the last epoch (the first
pays for cuDNN's algorithm search and allocator warm-up), the final validation top-1 of each, and each variant's
speed as a ratio to the CPU's.

    python benchmarks/scripts/train_speed.py                                   # resnet18 on 32x32 synthetic, 3 epochs
    python benchmarks/scripts/train_speed.py --model smallcnn --data digits --variants cpu,cuda-amp

Variants without a CUDA GPU are reported as skipped, never estimated. `--bare` also times a bare PyTorch loop
over the same model on preloaded tensors (no augmentation, no validation: forward, loss, backward, AdamW step) on
each device and prints edgespec's images/s as a ratio to it. With `--rounds R` the two alternate R times (edgespec
first in even rounds, bare first in odd ones), so that load from other jobs on a shared machine falls on both; the
ratio is given per round and as median, min and max:

    python benchmarks/scripts/train_speed.py --model smallcnn --data synthetic:size=28 --variants cpu --bare --rounds 5
    python benchmarks/scripts/train_speed.py --suite cpu --rounds 5        # smallcnn 28px, resnet18 32px, mbv3 32/64px

`--loop` adds, per (model, data), edgespec's training epoch alone (its loader, augmentation, optimizer and
`train_one_epoch`, on one model prepared once) against the bare loop, one epoch each in turn: what the loop and
data path cost, without the set-up, validation and checkpoints of a whole `train` run (variant `cpu-loop`).

`--channels-last` times the bare loop on the CPU with and without the channels_last memory format, interleaved,
for the models of `--suite` (the measurement behind toolkit.train.data.CPU_CHANNELS_LAST).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"cpu": {"device": "cpu"}, "cuda-fp32": {"device": "cuda", "amp": False},
            "cuda-amp": {"device": "cuda", "amp": True}}
SYNTH = "synthetic:groups=4,classes=3,per_class={n},size={size}"
SUITES = {  # (model, data): the three models on 28-64 px synthetic data
    "cpu": [("smallcnn", SYNTH.format(n=200, size=28)), ("resnet18", SYNTH.format(n=100, size=32)),
            ("mobilenet_v3_small", SYNTH.format(n=100, size=32)), ("mobilenet_v3_small", SYNTH.format(n=100, size=64))],
    "channels-last": [("smallcnn", SYNTH.format(n=200, size=28)), ("resnet18", SYNTH.format(n=100, size=32))],
}


def run_edgespec(name: str, model: str, data: str, args: argparse.Namespace, root: Path) -> dict:
    from toolkit.train import TrainConfig, train

    cfg = TrainConfig(data=data, model=model, epochs=args.epochs, batch_size=args.batch_size, seed=0,
                      workers=args.workers, **VARIANTS[name])
    out = Path(tempfile.mkdtemp(dir=root))
    t0 = time.perf_counter()
    train(cfg, out)
    wall = time.perf_counter() - t0
    history = json.loads((out / "metrics.json").read_text())
    return {"images_per_s": history[-1]["images_per_s"], "val_acc": history[-1]["val_acc"], "wall_s": wall}


class BareLoop:
    """Forward, loss, backward and AdamW step over the training images preloaded as one normalised tensor on the
    device: what the model itself allows. The data is prepared once; every call trains a fresh model."""

    def __init__(self, name: str, model: str, data: str, batch_size: int):
        import torch

        from toolkit.data import prepare
        from toolkit.data.batched import BatchTransform, image_tensor
        from toolkit.models import input_size_for

        self.device = torch.device(VARIANTS[name]["device"])
        self.amp = VARIANTS[name].get("amp", True) and self.device.type == "cuda"
        bundle = prepare(data, 0)
        self.size = input_size_for(model, bundle.source.size, None)
        ds = bundle.dataset("train")
        tf = BatchTransform(bundle.source.augment, False, self.size, bundle.mean, bundle.std)
        self.x = tf(image_tensor(ds)).to(self.device)
        self.y = torch.as_tensor(ds.labels).to(self.device)
        self.model, self.classes, self.channels = model, len(bundle.classes), bundle.source.channels
        self.batch_size = batch_size

    def __call__(self, epochs: int, channels_last: bool | None = None) -> float:
        """Images/s of the last of `epochs` epochs; `channels_last` None: the memory format edgespec's loop uses."""
        import torch

        from toolkit.models import create_model
        from toolkit.train.data import use_channels_last

        if channels_last is None:
            channels_last = use_channels_last(self.device, self.model)

        torch.manual_seed(0)
        model = create_model(self.model, self.classes, self.channels, self.size[0], False).to(self.device).train()
        x = self.x
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        steps = len(x) // self.batch_size
        for _ in range(epochs):
            order = torch.randperm(len(x), device=self.device)
            t0 = time.perf_counter()
            for k in range(steps):
                idx = order[k * self.batch_size:(k + 1) * self.batch_size]
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    loss = loss_fn(model(x[idx]), self.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        return steps * self.batch_size / wall


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def compare(name: str, model: str, data: str, args: argparse.Namespace, root: Path) -> dict:
    """edgespec and (with --bare) the bare loop, alternating for args.rounds rounds."""
    bare = BareLoop(name, model, data, args.batch_size) if args.bare else None
    rounds = []
    for r in range(args.rounds):
        row: dict = {}
        order = ("edgespec", "bare") if r % 2 == 0 else ("bare", "edgespec")
        for which in order:
            if which == "edgespec":
                row.update(run_edgespec(name, model, data, args, root))
            elif bare is not None:
                row["bare_images_per_s"] = round(bare(args.epochs), 1)
        if bare is not None:
            row["ratio"] = round(row["images_per_s"] / row["bare_images_per_s"], 3)
        rounds.append(row)
        print(f"  {model} {name} round {r + 1}/{args.rounds}: {row}", file=sys.stderr, flush=True)
    result = {"variant": name, "model": model, "data": data, "rounds": rounds,
              "images_per_s": spread([r["images_per_s"] for r in rounds]), "val_acc": rounds[-1]["val_acc"],
              "wall_s": round(sum(r["wall_s"] for r in rounds), 1)}
    if bare is not None:
        result["bare_images_per_s"] = spread([r["bare_images_per_s"] for r in rounds])
        result["ratio"] = spread([r["ratio"] for r in rounds])
    return result


def loop_compare(model: str, data: str, args: argparse.Namespace) -> dict:
    """edgespec's training epoch (its batched loader with augmentation, optimizer, schedule, memory format and
    `train_one_epoch`) against the bare loop, one epoch each in turn on the CPU, on one model and data set prepared
    once: the loop and data path alone, without the set-up, validation and checkpoints of a whole run."""
    import torch

    from toolkit.data import prepare
    from toolkit.models import create_model, input_size_for
    from toolkit.progress import NULL
    from toolkit.train import TrainConfig
    from toolkit.train.data import train_loader, use_channels_last
    from toolkit.train.distributed import DistInfo
    from toolkit.train.loop import make_optimizer, make_scheduler, train_one_epoch

    device = torch.device("cpu")
    cfg = TrainConfig(data=data, model=model, epochs=1000, batch_size=args.batch_size)
    bundle = prepare(data, 0)
    bundle.input_size = input_size_for(model, bundle.source.size, None)
    gen = torch.Generator()
    loader, _ = train_loader(bundle, bundle.dataset("train", True), cfg, device, DistInfo(), args.batch_size, gen)
    torch.manual_seed(0)
    net = create_model(model, len(bundle.classes), bundle.source.channels, bundle.input_size[0], False)
    cl = use_channels_last(device, model)
    net = net.to(memory_format=torch.channels_last) if cl else net
    opt = make_optimizer(net, cfg)
    sched = make_scheduler(opt, cfg, len(loader))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss_fn = torch.nn.CrossEntropyLoss()
    bare = BareLoop("cpu", model, data, args.batch_size)

    def edgespec_epoch(seed: int) -> float:
        gen.manual_seed(seed)
        with NULL.task("epoch", None) as task:
            stats = train_one_epoch(net, loader, opt, sched, scaler, loss_fn, device, None, cl, task)
        return stats["seen"] / stats["time"]

    edgespec_epoch(0)  # warm-up epoch for both
    rounds = []
    for r in range(args.rounds):
        got = {}
        for which in (("edgespec", "bare") if r % 2 == 0 else ("bare", "edgespec")):
            got[which] = edgespec_epoch(r + 1) if which == "edgespec" else bare(2)
        rounds.append({"images_per_s": round(got["edgespec"], 1), "bare_images_per_s": round(got["bare"], 1),
                       "ratio": round(got["edgespec"] / got["bare"], 3)})
        print(f"  {model} loop round {r + 1}/{args.rounds}: {rounds[-1]}", file=sys.stderr, flush=True)
    return {"variant": "cpu-loop", "model": model, "data": data, "rounds": rounds, "val_acc": float("nan"),
            "images_per_s": spread([r["images_per_s"] for r in rounds]),
            "bare_images_per_s": spread([r["bare_images_per_s"] for r in rounds]),
            "ratio": spread([r["ratio"] for r in rounds])}


def channels_last_study(args: argparse.Namespace) -> list[dict]:
    """The bare loop on the CPU in both memory formats, alternating for args.rounds rounds."""
    results = []
    for model, data in SUITES["channels-last"]:
        bare = BareLoop("cpu", model, data, args.batch_size)
        pairs = []
        for r in range(args.rounds):
            got = {}
            for cl in ((False, True) if r % 2 == 0 else (True, False)):
                got[cl] = bare(args.epochs, channels_last=cl)
            pairs.append((got[False], got[True]))
            print(f"  {model} round {r + 1}/{args.rounds}: contiguous {got[False]:.1f}, channels_last {got[True]:.1f} "
                  "img/s", file=sys.stderr, flush=True)
        results.append({"model": model, "data": data, "contiguous": spread([a for a, _ in pairs]),
                        "channels_last": spread([b for _, b in pairs]),
                        "ratio": spread([b / a for a, b in pairs])})
    return results


def print_header(args: argparse.Namespace) -> None:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"{args.epochs} epochs per measurement (last one timed), batch {args.batch_size}, {args.rounds} interleaved "
          f"round(s), {args.workers} loader workers; torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, GPU: {gpu}")


def print_table(results: list[dict]) -> None:
    cpu = {r["model"] + r["data"]: r for r in results if r["variant"] == "cpu" and "skipped" not in r}
    print(f"{'model':<19} {'data':<28} {'variant':<10} {'img/s median':>12} {'vs cpu':>7} {'bare img/s':>11} "
          f"{'edgespec/bare median [min-max]':>31} {'val top-1':>9}")
    for r in results:
        head = f"{r['model']:<19} {r['data'].replace('synthetic:groups=4,classes=3,', 'synth:'):<28} {r['variant']:<10}"
        if "skipped" in r:
            print(f"{head} skipped: {r['skipped']}")
            continue
        ref = cpu.get(r["model"] + r["data"])
        vs = f"{r['images_per_s']['median'] / ref['images_per_s']['median']:.1f}x" if ref else "-"
        bare = ratio = ""
        if "ratio" in r:
            bare = f"{r['bare_images_per_s']['median']:.1f}"
            ratio = f"{r['ratio']['median']:.2f} [{r['ratio']['min']:.2f}-{r['ratio']['max']:.2f}]"
        print(f"{head} {r['images_per_s']['median']:>12.1f} {vs:>7} {bare:>11} {ratio:>31} {r['val_acc']:>9.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--data", default="synthetic:groups=4,classes=3,per_class=200,size=32")
    p.add_argument("--suite", choices=sorted(SUITES), help="a list of (model, data) instead of --model/--data")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=None, help="loader workers for file-backed data [edgespec's]")
    p.add_argument("--variants", default="cpu,cuda-fp32,cuda-amp")
    p.add_argument("--bare", action="store_true", help="also time a bare PyTorch loop on preloaded tensors")
    p.add_argument("--rounds", type=int, default=1, help="alternate edgespec and the bare loop this many times")
    p.add_argument("--channels-last", action="store_true",
                   help="instead: the bare loop on the CPU with and without channels_last (smallcnn, resnet18)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 is steadier on a loaded host")
    p.add_argument("--loop", action="store_true",
                   help="also compare edgespec's training epoch alone with the bare loop, epoch by epoch (CPU)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.epochs < 1:
        sys.exit("error: --rounds and --epochs must be at least 1")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print_header(args)
    if args.channels_last:
        results = channels_last_study(args)
        print(f"{'model':<10} {'contiguous img/s':>17} {'channels_last img/s':>20} "
              f"{'cl/contiguous median [min-max]':>31}")
        for r in results:
            ratio = f"{r['ratio']['median']:.3f} [{r['ratio']['min']:.3f}-{r['ratio']['max']:.3f}]"
            print(f"{r['model']:<10} {r['contiguous']['median']:>17.1f} {r['channels_last']['median']:>20.1f} "
                  f"{ratio:>31}")
    else:
        configs = SUITES[args.suite] if args.suite else [(args.model, args.data)]
        if args.suite:
            args.bare = True
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            for model, data in configs:
                for name in names:
                    if VARIANTS[name]["device"] == "cuda" and not torch.cuda.is_available():
                        results.append({"variant": name, "model": model, "data": data,
                                        "skipped": "no CUDA GPU visible"})
                        continue
                    results.append(compare(name, model, data, args, Path(tmp)))
                if args.loop and "cpu" in names:
                    results.append(loop_compare(model, data, args))
        print_table(results)
    if args.json:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"gpu": gpu, "epochs": args.epochs, "batch_size": args.batch_size,
                                         "rounds": args.rounds, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
