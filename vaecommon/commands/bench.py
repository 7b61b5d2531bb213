"""Benchmark: jaxvae vs the PyTorch reference trainers, in one run on one machine.

    python scripts/bench.py --out bench/            # full: Fashion-MNIST 60k, ~10-15 min on 2 cores
    python scripts/bench.py --quick --out bench-smoke  # smoke: 4k examples, 1 repetition
    python scripts/bench.py --stream 20000 --out bench-stream/  # the streamed input, glasses VAE

Every measurement runs in its own subprocess (clean thread pools, its own peak RSS). Prints a
Markdown table and writes bench.json + bench.md. Ratios are computed pairwise within this run.
Rows: per-epoch time and examples/s of the jaxvae trainer (one compiled lax.scan epoch), the
torch reference trainer over a pre-loaded tensor ("plain"), the bare notebook loop, and the
torchvision DataLoader path (per-image ToTensor); compile time; peak memory; the FLOP bound
(model FLOPs per epoch / measured peak matmul rate); the Adam memory floor (the 28 bytes per
parameter per step Adam must move / measured elementwise memory rate) and the ratio to the sum
of both bounds; vmap sweep scaling; forced-host-device scaling; the final importance-sampled
test NLL of each framework (`train.test_nll_stats`, the Quickstart's k = 5,000 on its 1,000
test images) against its FLOP bound (encoder + k decoder passes per image / peak matmul rate).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FASHION = Path("/usr/share/datasets/fashion-mnist")
PRESETS = ("pytorch_examples", "flax_examples", "pytorch_mnist_vae", "simple_vae", "conv_vae")


# ----------------------------------------------------------------------------------------------
# workers (run in subprocesses)


def _dataset(quick: bool, limit: int | None = None):
    from vaecommon import datasets

    name = "fashion_mnist" if FASHION.exists() else "mnist5k"
    images, labels, info = datasets.load_dataset_arrays(name, "train", limit=4000 if quick else limit)
    return images, info


def _cfg(preset: str, batch: int, precision: str = "float32"):
    from vaecommon.config import TrainConfig

    return TrainConfig(model=preset, batch_size=batch, epochs=1, precision=precision)


def _weight_counts(preset: str) -> tuple[int, int, int]:
    """(weights of all Linear layers, weights of the first Linear, all parameters) of the torch twin."""
    import torch

    from vaecommon.commands import twins

    model = twins.module("torch", "models").build_model(preset)
    lin = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return (sum(m.weight.numel() for m in lin), lin[0].weight.numel(),
            sum(p.numel() for p in model.parameters()))


def worker(task: dict) -> dict:
    from vaecommon.commands import twins

    quick = task.get("quick", False)
    reps = 1 if quick else task.get("reps", 3)
    kind = task["kind"]
    if kind == "peak":
        jbench = twins.module("jax", "bench")
        return {"gflops": jbench.peak_matmul_gflops(), "gbps": jbench.stream_gbps(),
                "adam_bytes_per_param": jbench.ADAM_BYTES_PER_PARAM}
    if kind == "device":
        import jax

        d = jax.devices()[0]
        return {"platform": d.platform, "device_kind": getattr(d, "device_kind", d.platform),
                "count": jax.device_count(), "jax": jax.__version__}
    if kind == "input":  # --stream: one input path of the glasses VAE on a generated folder
        from vaecommon.config import TrainConfig

        return twins.module("jax", "bench").input_timing(
            TrainConfig(**task["cfg"]), input=task["input"], steps=task["steps"],
            workers=task.get("workers"), read_steps=task.get("read_steps", 0))
    if kind in ("jax_nll", "torch_nll"):
        return _nll_worker(task)
    images, info = _dataset(quick, task.get("limit"))
    cfg = _cfg(task.get("preset", "pytorch_examples"), task.get("batch", 128),
               task.get("precision", "float32"))
    out = {"data": f"{info.dataset} ({info.n} examples)"}
    if kind == "jax":
        out.update(twins.module("jax", "bench").epoch_timing(cfg, images, reps=reps, num_devices=task.get("devices", 1)))
    elif kind == "profile":
        out.update(twins.module("jax", "bench").profile_epoch(cfg, images), preset=cfg.model)
    elif kind == "jax_sweep":
        out.update(twins.module("jax", "bench").sweep_timing(cfg, images, task["members"], reps=reps))
    elif kind in ("torch", "torch_minimal"):
        import torch

        bench = twins.module("torch", "bench")
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())  # NHWC -> NCHW
        fn = bench.epoch_timing if kind == "torch" else bench.epoch_timing_minimal
        out.update(fn(cfg, x, reps=reps))
    elif kind == "torch_dataloader":
        bench = twins.module("torch", "bench")
        root = Path(tempfile.mkdtemp(prefix="bench_tv_"))
        raw = root / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for f in FASHION.glob("*-ubyte.gz"):  # torchvision checks for the unpacked files
            with gzip.open(f) as src, open(raw / f.name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
        try:
            out.update(bench.epoch_timing_dataloader(cfg, root, reps=max(1, reps - 1)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        raise ValueError(kind)
    if kind in ("jax", "torch"):
        w, w0, out["params"] = _weight_counts(cfg.model)
        if cfg.model != "conv_vae":
            out["matmul_flops_per_example"] = 6 * w - 2 * w0  # fwd + dW for all, dX except layer 1
    return out


def _nll_worker(task: dict) -> dict:
    """The final test NLL of an untrained `task["preset"]` on its own dataset's test split."""
    from vaecommon import datasets
    from vaecommon.commands import twins
    from vaecommon.config import TrainConfig, resolve

    cfg = resolve(TrainConfig(model=task["preset"]))
    images, _, info = datasets.load_dataset_arrays(cfg.dataset, "test", limit=task["nll_limit"])
    out = {"data": f"{info.dataset} test ({info.n} examples)", "preset": cfg.model}
    if task["kind"] == "jax_nll":
        out.update(twins.module("jax", "bench").nll_timing(cfg, images, k=task["nll_samples"]))
    else:
        import torch

        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())  # NHWC -> NCHW
        out.update(twins.module("torch", "bench").nll_timing(cfg, x, k=task["nll_samples"]))
    return out


def run_worker(task: dict, env_extra: dict | None = None, timeout: float | None = None) -> dict:
    """Run one task in a subprocess; adds its own peak RSS (MiB, from wait4) and wall time.

    A task that fails or outlives `timeout` seconds returns {"error": ...} instead of raising, so
    one slow or broken measurement does not lose the others."""
    env = dict(os.environ, **(env_extra or {}))
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "vaecommon.commands.bench", "--worker", json.dumps(task)],
                                stdout=out, stderr=err, text=True, env=env, cwd=root)
        timer = None
        if timeout:
            import threading

            timer = threading.Timer(timeout, proc.kill)
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        if timer is not None:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        why = (f"killed after the {timeout:.0f} s limit" if timeout and proc.returncode < 0
               else f"exit {proc.returncode}: {stderr.strip().splitlines()[-1:] or ''}")
        print(f"bench worker {task['kind']} failed: {why}", file=sys.stderr)
        return {"error": why, "wall_s": time.time() - t}
    res = json.loads(stdout.strip().splitlines()[-1])
    res["wall_s"] = time.time() - t
    res["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB
    return res


# ----------------------------------------------------------------------------------------------
# orchestration


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def run_all(args) -> dict:
    quick = args.quick
    base = {"quick": quick, "reps": args.reps, "limit": args.limit}
    res: dict = {"machine": machine(), "quick": quick, "batch": args.batch, "rows": [], "sweep": [],
                 "devices": [], "profile": None, "nll": {}}
    peak = run_worker({"kind": "peak"})
    res["peak_gflops"], res["stream_gbps"] = peak["gflops"], peak["gbps"]
    res["adam_bytes_per_param"] = peak["adam_bytes_per_param"]
    print(f"peak matmul: {res['peak_gflops']:.1f} GFLOP/s, memory {res['stream_gbps']:.1f} GB/s",
          file=sys.stderr)
    presets = () if args.nll_only else args.presets or PRESETS
    rounds = max(1, args.rounds)
    res["rounds"] = rounds
    for preset in presets:
        kinds = [k for k in ("jax", "torch", "torch_minimal") + (("torch_dataloader",) if args.dataloader else ())
                 if not (k == "torch_dataloader" and (quick or not FASHION.exists()))]
        runs: dict[str, list] = {k: [] for k in kinds}
        for r in range(rounds):  # the trainers alternate, so a slow spell of the machine hits all
            for kind in kinds:
                print(f"{preset}: {kind} ..." + (f" (round {r + 1} of {rounds})" if rounds > 1 else ""),
                      file=sys.stderr)
                runs[kind].append(run_worker({**base, "kind": kind, "preset": preset, "batch": args.batch},
                                             timeout=args.task_timeout))
        res["rows"].append({"preset": preset, **{k: median_run(v) for k, v in runs.items()}})
        _save_partial(args, res)
    if args.nll:
        nll_task = {**base, "preset": args.nll_preset,
                    "nll_samples": 500 if quick else args.nll_samples,
                    "nll_limit": 100 if quick else args.nll_limit}
        for kind in ("jax_nll", "torch_nll"):
            print(f"{args.nll_preset}: {kind} ...", file=sys.stderr)
            res["nll"][kind] = run_worker({**nll_task, "kind": kind}, timeout=args.task_timeout)
            _save_partial(args, res)
    if args.profile:
        print(f"profile {args.profile} ...", file=sys.stderr)
        res["profile"] = run_worker({**base, "kind": "profile", "preset": args.profile,
                                     "batch": args.batch}, timeout=args.task_timeout)
        _save_partial(args, res)
    if "pytorch_examples" in presets and args.scaling:
        for m in (1, 2, 4, 8):
            print(f"sweep x{m} ...", file=sys.stderr)
            res["sweep"].append(run_worker({**base, "kind": "jax_sweep", "members": m,
                                            "preset": "pytorch_examples", "batch": args.batch}))
        for d in (1, 2, 4):
            print(f"devices {d} ...", file=sys.stderr)
            r = run_worker({**base, "kind": "jax", "devices": d, "preset": "pytorch_examples",
                            "batch": args.batch},
                           {"XLA_FLAGS": f"--xla_force_host_platform_device_count={d}"})
            r["devices"] = d
            res["devices"].append(r)
    return res


def median_run(runs: list[dict]) -> dict:
    """Of one trainer's rounds, the run with the median epoch time (the lower median for an even
    count), with every round's epoch time in "rounds_epoch_s"; failed rounds are left out (all
    failed: the last failure)."""
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["epoch_s"])
    if not ok:
        return runs[-1]
    return {**ok[(len(ok) - 1) // 2], "rounds_epoch_s": [r["epoch_s"] for r in runs if "error" not in r]}


def _save_partial(args, res) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.partial.json").write_text(json.dumps(res, indent=1))


def _num(v, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(res: dict) -> str:
    peak, gbps = res["peak_gflops"], res.get("stream_gbps")
    lines = [f"Machine: {res['machine']}; measured peak float32 matmul {peak:.0f} GFLOP/s"
             + (f", elementwise memory rate {gbps:.1f} GB/s (4 MiB arrays)" if gbps else "") + "."
             + (" QUICK run (4k examples, 1 repetition): not for quoting." if res["quick"] else "")
             + (f" Each trainer was measured in {res['rounds']} alternating rounds; a row is its "
                "median round." if res.get("rounds", 1) > 1 else ""),
             "", "| preset | trainer | epoch s | examples/s | vs jaxvae | compile s | peak RSS MiB "
             "| FLOP-bound s | x bound | + Adam floor s | x FLOP+Adam bound |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"jax": "jaxvae (scan epoch)", "torch": "torchvae reference (pre-loaded tensor)",
             "torch_minimal": "bare notebook loop (pre-loaded tensor)",
             "torch_dataloader": "torchvision DataLoader + ToTensor"}
    for row in res["rows"]:
        j = row["jax"]
        if "error" in j:
            lines.append(f"| {row['preset']} | jaxvae (scan epoch) | {j['error']} | | | | | | |")
            j = None
        # model FLOPs per epoch: the analytic matmul count for MLPs; for conv models XLA's count
        # of one compiled step (cost analysis counts a scan body once) times the steps
        mf = (j or {}).get("matmul_flops_per_example")
        xf = (j or {}).get("xla_flops_per_step")
        flops = (mf * j["steps"] * res.get("batch", 128) if mf
                 else xf * j["steps"] if xf else None)
        bound = flops / (peak * 1e9) if flops else None
        # Adam runs after the backward pass, so its memory time adds to the matmul time
        params = (j or {}).get("params")
        floor = (params * res["adam_bytes_per_param"] * j["steps"] / (gbps * 1e9)
                 if params and gbps else None)
        both = bound + floor if bound and floor else None
        for kind in ("jax", "torch", "torch_minimal", "torch_dataloader"):
            if kind not in row or (kind == "jax" and j is None):
                continue
            r = row[kind]
            if "error" in r:
                lines.append(f"| {row['preset']} | {names[kind]} | {r['error']} | | | | | | | | |")
                continue
            ratio = r["epoch_s"] / j["epoch_s"] if j else float("nan")
            lines.append(
                f"| {row['preset']} | {names[kind]} | {r['epoch_s']:.2f} | {r['examples_per_s']:.0f} | "
                f"{ratio:.2f}x | {_num(r.get('compile_s'), 1)} | {r['peak_rss_mib']:.0f} | "
                f"{_num(bound, 2)} | {_num(bound and r['epoch_s'] / bound, 2)} | "
                f"{_num(floor, 2)} | {_num(both and r['epoch_s'] / both, 2)} |")
    if not res["rows"]:
        del lines[1:4]  # an --nll-only run: no epoch table
    if res.get("nll"):
        lines += ["", *nll_markdown(res["nll"], peak)]
    def scaling(rows, key, columns):  # one row per measurement; a failed one says why
        ok = [r for r in rows if "error" not in r]
        one = rows[0]["epoch_s"] if ok and ok[0] is rows[0] else None
        out = ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in rows:
            if "error" in r:
                out.append(f"| {r[key]} | failed: {r['error']} |" + " |" * (len(columns) - 2))
                continue
            cells = [str(r[key]), f"{r['epoch_s']:.2f}", f"{r['epoch_s'] / one:.2f}" if one else "-"]
            if "compile s" in columns:
                cells.append(f"{r['compile_s']:.1f}")
            out.append("| " + " | ".join(cells) + " |")
        return out

    if res["sweep"]:
        lines += scaling(res["sweep"], "members",
                         ["vmap sweep members", "epoch s", "x one member", "compile s"])
    if res["devices"]:
        lines += scaling(res["devices"], "devices", ["forced host devices", "epoch s", "x one device"])
    prof = res.get("profile")
    if prof and "error" not in prof:
        op = prof["op_s"]
        lines += ["", f"Profile of one jaxvae epoch ({prof['preset']}, {prof['data']}; jax.profiler trace: "
                  f"{prof['epoch_s']:.2f} s untraced, instruction times sum to {op:.2f} s):", "",
                  "| where the time goes | s per epoch | share |", "|---|---|---|"]
        lines += [f"| {c} | {t:.3f} | {100 * t / op:.0f}% |"
                  for c, t in sorted(prof["categories"].items(), key=lambda kv: -kv[1]) if t > 0]
        lines += ["", "| top instructions | category | s per epoch | calls | Python origin |",
                  "|---|---|---|---|---|"]
        lines += [f"| {n} | {c} | {t:.3f} | {k} | {o} |" for n, c, t, k, o in prof["top"][:10]]
    return "\n".join(lines) + "\n"


def nll_markdown(nll: dict, peak: float) -> list[str]:
    """The NLL table: both frameworks' final test NLL against its FLOP bound (the matmul FLOPs
    counted from the JAX twin's jaxprs; the torch twin runs the same ones)."""
    j = nll.get("jax_nll", {})
    flops = j.get("matmul_flops")
    bound = flops / (peak * 1e9) if flops else None
    head = (f"{j.get('preset', '')} on {j.get('data', '')}, k = {j.get('k', '')}" if "error" not in j
            else "")
    lines = [f"Final importance-sampled test NLL ({head}; FLOP bound = encoder + k decoder passes "
             f"per image, {_num(flops and flops / 1e12, 2)} TFLOP, / peak matmul rate):", "",
             "| trainer | NLL s | compile s | vs jaxvae | FLOP-bound s | x bound | threads | chunk |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, name in (("jax_nll", "jaxvae (jitted)"), ("torch_nll", "torchvae (eager)")):
        r = nll.get(kind)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | | |")
            continue
        vs = r["nll_s"] / j["nll_s"] if "nll_s" in j else None
        lines.append(f"| {name} | {r['nll_s']:.2f} | {_num(r.get('compile_s'), 1)} | {_num(vs, 2)}x | "
                     f"{_num(bound, 2)} | {_num(bound and r['nll_s'] / bound, 2)} | "
                     f"{r.get('threads', '-')} | {r.get('chunk', '-')} |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    p.add_argument("--presets", nargs="*", choices=PRESETS, help="presets to time (default: all five)")
    p.add_argument("--batch", type=int, default=128, help="batch size for every trainer")
    p.add_argument("--reps", type=int, default=3, help="timed epochs per measurement (median)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every trainer of a preset this many times, alternating, and "
                        "report each one's median round (on a shared machine the speed drifts "
                        "between measurements; alternating spreads a slow spell over all rows)")
    p.add_argument("--quick", action="store_true", help="4k examples, 1 repetition (smoke test)")
    p.add_argument("--no-dataloader", dest="dataloader", action="store_false",
                   help="skip the torchvision DataLoader rows (slowest)")
    p.add_argument("--task-timeout", type=float, default=900,
                   help="seconds one measurement may take before it is recorded as failed")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training examples (e.g. for the slow conv rows)")
    p.add_argument("--no-scaling", dest="scaling", action="store_false",
                   help="skip the sweep and device-scaling rows")
    p.add_argument("--profile", nargs="?", const="pytorch_examples", default=None, choices=PRESETS,
                   help="also profile one jaxvae epoch of this preset (default pytorch_examples): "
                        "time per category (matmul, optimizer, loss, RNG, ...) and top instructions")
    p.add_argument("--stream", type=int, default=None, metavar="N",
                   help="instead: benchmark the streamed input (--input stream) of the glasses VAE "
                        "on a generated folder of N RGB 256x256 JPEGs (the book's size: 20000): "
                        "peak memory and examples/s against the resident input")
    p.add_argument("--stream-dir", default=None,
                   help="--stream: where the generated folder goes (kept and reused; default "
                        "OUT/images-N)")
    p.add_argument("--stream-steps", type=int, default=20,
                   help="--stream: training steps timed per input path (after a warm-up chunk)")
    p.add_argument("--stream-resident", type=int, default=2000, metavar="N2",
                   help="--stream: training examples of the resident-vs-streamed comparison "
                        "(both fit in memory)")
    p.add_argument("--workers", type=int, default=None,
                   help="--stream: Grain worker processes (default: min(4, CPUs))")
    p.add_argument("--no-nll", dest="nll", action="store_false",
                   help="skip the final test NLL rows")
    p.add_argument("--nll-only", action="store_true",
                   help="only the peak rates and the NLL rows (no epochs, sweep or scaling)")
    p.add_argument("--nll-preset", default="pytorch_examples", choices=PRESETS,
                   help="preset (and its dataset's test split) of the NLL rows")
    p.add_argument("--nll-samples", type=int, default=5000,
                   help="importance samples per test image of the NLL rows (the Quickstart's 5000)")
    p.add_argument("--nll-limit", type=int, default=1000,
                   help="test images of the NLL rows (mnist5k's 1000: the Quickstart's)")
    p.add_argument("--gpu", action="store_true",
                   help="instead: the accelerator report (JAX on the default GPU/TPU backend): "
                        "float32 and bfloat16 epochs with steps/s, vmap sweeps up to 32 members, "
                        "the final-NLL row and the parity report; writes gpu.json, gpu.md, "
                        "parity.json and parity.md to --out")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def run_stream(args) -> int:
    """--stream N: generate (or reuse) the folder, convert it to array_record, then time each
    input path in its own subprocess (its peak RSS; the Grain workers' peak is reported apart)."""
    from vaecommon import records

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(args.stream_dir or out / f"images-{args.stream}")
    res: dict = {"machine": machine(), "images": args.stream, "folder": str(folder), "rows": []}
    done = folder / ".complete"
    if not done.exists():
        t = time.time()
        records.synthetic_image_folder(folder, args.stream, size=256)
        done.write_text(str(args.stream))
        res["generate_s"] = time.time() - t
        print(f"generated {args.stream} images in {res['generate_s']:.0f} s", file=sys.stderr)
    ar = folder.with_name(folder.name + "-array_record")
    if not (ar / "dataset.json").exists():
        t = time.time()
        records.write_array_record("image_folder", ar, data_dir=folder)
        res["convert_s"] = time.time() - t
        print(f"converted to array_record in {res['convert_s']:.0f} s", file=sys.stderr)
    base = {"model": "manning_glasses_vae", "dataset": "image_folder", "data_dir": str(folder),
            "limit_test": 16}
    small = {"limit_train": args.stream_resident}
    plan = [
        ("resident", f"image folder, first {args.stream_resident}", {**base, **small}),
        ("stream", f"image folder, first {args.stream_resident}", {**base, **small}),
        ("stream", "image folder, all", base),
        ("stream", "array_record, all", {**base, "data_source": "array_record", "data_dir": str(ar)}),
    ]
    for input, what, cfg in plan:
        task = {"kind": "input", "input": input, "cfg": cfg, "steps": args.stream_steps,
                "workers": args.workers, "read_steps": 4 * args.stream_steps if input == "stream" else 0}
        row = run_worker(task, timeout=args.task_timeout)
        row["what"] = what
        res["rows"].append(row)
        print(f"{input:<8} {what:<32} " + (row.get("error") or
              f"{row['examples_per_s']:.1f} examples/s, peak RSS {row['peak_rss_mib']:.0f} MiB"),
              file=sys.stderr)
    (out / "stream.json").write_text(json.dumps(res, indent=1))
    md = stream_markdown(res)
    (out / "stream.md").write_text(md)
    print(md)
    return 0


def stream_markdown(res: dict) -> str:
    lines = [f"Streamed input, glasses VAE (256x256 RGB, batch 16), {res['machine']}; "
             f"folder of {res['images']} generated JPEGs"
             + (f" (generated in {res['generate_s']:.0f} s" if "generate_s" in res else "")
             + (f", converted to array_record in {res['convert_s']:.0f} s)" if "convert_s" in res
                else (")" if "generate_s" in res else "")), "",
             "| input | data | train examples | float32 size (MiB) | workers x chunk | train examples/s "
             "| input alone examples/s | peak RSS (MiB) | workers' peak RSS (MiB) |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r.get('input', '?')} | {r['what']} | failed: {r['error']} |")
            continue
        wc = f"{r['workers']} x {r['chunk']}" if r["input"] == "stream" else "-"
        read = f"{r['read_examples_per_s']:.1f}" if r.get("read_examples_per_s") else "-"
        kids = (" + ".join(f"{m:.0f}" for m in r["children_peak_rss_mib"])
                if r.get("children_peak_rss_mib") else "-")
        lines.append(f"| {r['input']} | {r['what']} | {r['n']} | {r['float32_dataset_mib']:.0f} "
                     f"| {wc} | {r['examples_per_s']:.1f} | {read} | {r['peak_rss_mib']:.0f} | {kids} |")
    return "\n".join(lines) + "\n"


GPU_PRESETS = ("pytorch_examples", "conv_vae", "exemplar_vae")
GPU_SWEEP = (1, 8, 32)


def run_gpu(args) -> int:
    """--gpu: one command for an accelerator session, so its scarce minutes go to measuring.

    JAX only (the torch reference trainer is a CPU loop). Rows: each preset's scanned epoch on
    Fashion-MNIST's 60k in float32 and bfloat16 (steps/s, examples/s, compile s), a vmap sweep of
    1, 8 and 32 pytorch_examples members, the final test NLL (k = 5000), then the parity report
    (scripts/parity.py) on the same device. Every piece is written as soon as it exists
    (gpu.partial.json), so a session cut short keeps what it measured.
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = run_worker({"kind": "device"})
    if "error" in dev:
        raise ValueError(f"--gpu: JAX could not start: {dev['error']}")
    if dev["platform"] == "cpu":
        raise ValueError("--gpu: JAX sees no GPU or TPU here (its backend is cpu); "
                        "run the plain bench on CPUs")
    base = {"quick": args.quick, "reps": args.reps, "limit": args.limit}
    res: dict = {"machine": machine(), "device": dev, "batch": args.batch, "rows": [], "sweep": [],
                 "nll": {}}
    res["peak"] = run_worker({"kind": "peak"})

    def save() -> None:
        (out / "gpu.partial.json").write_text(json.dumps(res, indent=1))

    for preset in args.presets or GPU_PRESETS:
        for precision in ("float32", "bfloat16"):
            print(f"{preset} {precision} ...", file=sys.stderr)
            r = run_worker({**base, "kind": "jax", "preset": preset, "batch": args.batch,
                            "precision": precision}, timeout=args.task_timeout)
            res["rows"].append({"preset": preset, "precision": precision, **r})
            save()
    for m in GPU_SWEEP:
        print(f"sweep x{m} ...", file=sys.stderr)
        res["sweep"].append(run_worker({**base, "kind": "jax_sweep", "members": m,
                                        "preset": "pytorch_examples", "batch": args.batch},
                                       timeout=args.task_timeout))
        save()
    if args.nll:
        res["nll"]["jax_nll"] = run_worker(
            {**base, "kind": "jax_nll", "preset": args.nll_preset, "nll_samples": args.nll_samples,
             "nll_limit": args.nll_limit}, timeout=args.task_timeout)
        save()
    print("parity report ...", file=sys.stderr)
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "parity_tests.cli", "--json", str(out / "parity.json"),
                           "--markdown", str(out / "parity.md")],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    res["parity"] = {"exit_code": proc.returncode, "seconds": time.time() - t,
                     "tail": proc.stdout[-2000:] + proc.stderr[-2000:]}
    (out / "gpu.json").write_text(json.dumps(res, indent=1))
    (out / "gpu.partial.json").unlink(missing_ok=True)
    md = gpu_markdown(res)
    (out / "gpu.md").write_text(md)
    print(md)
    return 0


def gpu_markdown(res: dict) -> str:
    dev = res["device"]
    lines = [f"Device: {dev['count']} x {dev['device_kind']} ({dev['platform']}), JAX {dev['jax']}; "
             f"host {res['machine']}; batch {res['batch']}.", "",
             "| preset | precision | epoch s | steps/s | examples/s | compile s |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['precision']} | {r['error']} | | | |")
            continue
        lines.append(f"| {r['preset']} | {r['precision']} | {r['epoch_s']:.3f} | {r['steps_per_s']:.0f} | "
                     f"{r['examples_per_s']:.0f} | {r['compile_s']:.1f} |")
    ok = [s for s in res["sweep"] if "error" not in s]
    if ok:
        one = ok[0]["epoch_s"]
        lines += ["", "| vmap sweep members (pytorch_examples) | epoch s | x one member | member-epochs/s |",
                  "|---|---|---|---|"]
        lines += [f"| {s['members']} | {s['epoch_s']:.3f} | {s['epoch_s'] / one:.2f} | "
                  f"{s['members'] / s['epoch_s']:.1f} |" for s in ok]
    for s in res["sweep"]:
        if "error" in s:
            lines.append(f"| sweep | {s['error']} | | |")
    n = res["nll"].get("jax_nll")
    if n:
        lines += ["", f"Final test NLL row: {json.dumps({k: v for k, v in n.items() if not isinstance(v, (list, dict))})}"]
    p = res.get("parity")
    if p:
        lines += ["", f"Parity report: exit {p['exit_code']} in {p['seconds']:.0f} s (parity.md, parity.json)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.stream:
        return run_stream(args)
    if args.gpu:
        from vaecommon.commands import _common as C

        with C.user_errors(build_parser()):
            return run_gpu(args)
    res = run_all(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (out / "bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
