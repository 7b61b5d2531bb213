"""Timing of the JAX trainer for `scripts/bench.py`. Twin: `torchvae/bench.py`.

Each function times the real training code (`Trainer.train_epoch`, the same compiled program
`train_and_evaluate` runs) on a device-resident training set, and reports seconds per epoch
(median over repetitions, after a separately timed compile), examples/s and XLA's FLOP count.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import train, xla_options
from vaecommon.config import TrainConfig, resolve
from vaecommon.schedule import epoch_batches

__all__ = ["peak_matmul_gflops", "stream_gbps", "ADAM_BYTES_PER_PARAM", "epoch_timing", "sweep_timing",
           "input_timing", "matmul_flops", "equations", "nll_timing"]


def _best_seconds(f, *args, reps: int, inner: int = 1) -> float:
    """Seconds per call of the jitted `f(*args)`: best over `reps` timings of `inner` back-to-back
    calls (after one warm-up call that compiles it)."""
    f(*args).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            out = f(*args)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - t) / inner)
    return best


def peak_matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """Measured float32 matmul rate (GFLOP/s) of this machine: best of `reps` n x n x n products."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    return 2 * n**3 / _best_seconds(jax.jit(lambda a, b: a @ b), a, b, reps=reps) / 1e9


# Adam's update touches each parameter at least 7 times per step, 4 bytes each in float32: reads
# the parameter, its gradient and both moments, writes the parameter and both moments.
ADAM_BYTES_PER_PARAM = 7 * 4


def stream_gbps(mib: float = 4.0, reps: int = 20) -> float:
    """Measured elementwise memory rate (GB/s): best of `reps` timings of a jitted `a + b` over
    float32 arrays of `mib` MiB each (3 arrays moved). 4 MiB is about one MLP preset's parameter
    vector, the size Adam streams through each step."""
    n = int(mib * 2**20 / 4)
    a = jnp.ones((n,), jnp.float32)
    b = jnp.full((n,), 2.0, jnp.float32)
    return 3 * n * 4 / _best_seconds(jax.jit(lambda a, b: a + b), a, b, reps=reps, inner=10) / 1e9


def _block(tree):
    return jax.tree.map(lambda x: x.block_until_ready(), tree)


def _compiled_epoch(cfg: TrainConfig, images: np.ndarray, num_devices: int = 1):
    """(trainer, compiled epoch(state, images, idx), initial state, device images, compile s)."""
    n = images.shape[0]
    mesh = train.data_parallel(num_devices, cfg.batch_size, 1)
    trainer = train.Trainer.create(cfg, n, mesh=mesh)
    root = jax.random.key(cfg.seed)
    state = trainer.init_state(root)
    x = jnp.asarray(images)
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec as P

        x = jax.device_put(x, NamedSharding(mesh, P()))
        state = jax.device_put(state, NamedSharding(mesh, P()))

    def epoch(state, images, idx):
        return trainer.train_epoch(state, images, idx, root)

    fn = xla_options.jit(epoch, donate_argnums=(0,))
    idx0 = jnp.asarray(epoch_batches(cfg.seed, 0, n, cfg.batch_size))
    t = time.perf_counter()
    compiled = fn.lower(state, x, idx0).compile()
    return trainer, compiled, state, x, time.perf_counter() - t


def _run_epoch(compiled, state, x, cfg: TrainConfig, epoch: int):
    """(state, terms, seconds) of one compiled epoch, waited for."""
    idx = jnp.asarray(epoch_batches(cfg.seed, epoch, x.shape[0], cfg.batch_size))
    t = time.perf_counter()
    state, terms = compiled(state, x, idx)
    _block((state, terms))
    return state, terms, time.perf_counter() - t


def epoch_timing(cfg: TrainConfig, images: np.ndarray, *, reps: int = 3,
                 num_devices: int = 1) -> dict[str, Any]:
    """Compile time and steady-state epoch time of `cfg` on `images` (N, H, W, C)."""
    cfg = resolve(cfg)
    trainer, compiled, state, x, compile_s = _compiled_epoch(cfg, images, num_devices)
    flops = _flops(compiled)
    times = []
    for e in range(reps + 1):  # the first run warms caches and is not counted
        state, terms, seconds = _run_epoch(compiled, state, x, cfg, e)
        if e:
            times.append(seconds)
    med = statistics.median(times)
    steps = trainer.steps_per_epoch
    return {"compile_s": compile_s, "epoch_s": med, "epoch_s_all": times,
            "examples_per_s": steps * cfg.batch_size / med, "steps_per_s": steps / med,
            "steps": steps, "xla_flops_per_step": flops,  # XLA counts the scan body once
            "final_loss": float(np.mean(np.asarray(terms["loss"])[-10:]))}


def _flops(compiled) -> float | None:
    try:
        ca = compiled.cost_analysis()
        if isinstance(ca, list):
            ca = ca[0]
        return float(ca.get("flops")) if ca and ca.get("flops") else None
    except Exception:  # noqa: BLE001 - cost analysis is optional on some backends
        return None


def sweep_timing(cfg: TrainConfig, images: np.ndarray, members: int, *, reps: int = 3
                 ) -> dict[str, Any]:
    """Epoch time of `members` seeds trained together with jax.vmap (one compiled program)."""
    cfg = resolve(cfg)
    n = images.shape[0]
    trainer = train.Trainer.create(cfg, n)
    roots = [jax.random.key(cfg.seed + m) for m in range(members)]
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *[trainer.init_state(r) for r in roots])
    keys = jnp.stack(roots)
    hyper = {"lr": jnp.full((members,), cfg.lr, jnp.float32)}
    x = jnp.asarray(images)

    def epoch(state, idx, keys, hyper):
        return jax.vmap(lambda s, i, k, h, st: trainer.train_epoch(s, x, i, k, h, start_step=st),
                        in_axes=(0, 0, 0, 0, None))(state, idx, keys, hyper, state.step[0])

    def idx_for(e):
        return jnp.asarray(np.stack([epoch_batches(cfg.seed + m, e, n, cfg.batch_size)
                                     for m in range(members)]))

    fn = xla_options.jit(epoch, donate_argnums=(0,))
    t = time.perf_counter()
    compiled = fn.lower(state, idx_for(0), keys, hyper).compile()
    compile_s = time.perf_counter() - t
    times = []
    for e in range(reps + 1):
        idx = idx_for(e)
        t = time.perf_counter()
        state, terms = compiled(state, idx, keys, hyper)
        _block((state, terms))
        if e:
            times.append(time.perf_counter() - t)
    return {"members": members, "compile_s": compile_s, "epoch_s": statistics.median(times),
            "epoch_s_all": times}


# ---- the test NLL --------------------------------------------------------------------------


def matmul_flops(fn, *args) -> int:
    """FLOPs (2 per multiply-add) of the dot_general and conv_general_dilated equations in
    fn(*args)'s jaxpr, nested jaxprs included. A transposed (input-dilated) convolution counts
    its inserted zeros too, so for conv models this is an upper bound."""
    total = 0
    for eqn in equations(jax.make_jaxpr(fn)(*args).jaxpr):
        out = int(np.prod(eqn.outvars[0].aval.shape))
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * out * int(np.prod([lhs[i] for i in contract]))
        elif eqn.primitive.name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            total += 2 * out * int(np.prod([rhs[i] for i in spec[1:]]))
    return total


def equations(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs nested in it (scan, cond, pjit, custom_vjp
    bodies), depth first."""
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def nll_timing(cfg: TrainConfig, images: np.ndarray, *, k: int) -> dict[str, Any]:
    """Seconds of `train.test_nll_stats` (the final test NLL of a run) with k importance samples
    on `images` (N, H, W, C), for freshly initialised weights (the cost does not depend on
    them), and its matmul FLOPs: N x (encoder) + N x k x (decoder), counted from the jaxprs.
    A first call on one batch compiles the program (reported as compile_s, with that batch)."""
    cfg = resolve(cfg)
    trainer = train.Trainer.create(cfg, max(images.shape[0], cfg.batch_size))  # no training
    root = jax.random.key(cfg.seed)
    state = trainer.init_state(root)
    model = trainer.model_from(state.params, state.rest)
    enc = matmul_flops(model.encode, jnp.zeros((1,) + images.shape[1:], jnp.float32))
    dec = matmul_flops(model.decode_logits, jnp.zeros((1, trainer.latent_dim), jnp.float32))

    def run(x):
        return train.test_nll_stats(trainer, state.params, state.rest, x, root, k=k)

    batch = 100  # test_nll_stats's default
    t = time.perf_counter()
    run(images[:batch])
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    nll, _ = run(images)
    nll_s = time.perf_counter() - t
    n = images.shape[0]
    return {"nll_s": nll_s, "compile_s": compile_s, "k": k, "examples": n, "nll": nll,
            "matmul_flops": n * enc + n * k * dec, "chunk": train.NLL_CHUNK}


# ---- profile -------------------------------------------------------------------------------

CATEGORIES = ("matmul (forward + backward)", "optimizer (Adam moments + update, grad norm)",
              "loss terms (BCE, KL)", "layers' elementwise (bias, activations)",
              "RNG (noise, binarization)", "batch gather", "other (copies, loop, reductions)")


def _hlo_index(hlo: str) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """instruction name -> (category, its Python stack as [(file, function)]) from HLO text.

    Uses the stack-frame tables XLA keeps in the module (FileNames, FunctionNames,
    FileLocations, StackFrames) and whether the instruction (or the computation a fusion calls)
    contains a dot.
    """
    import re

    tables: dict[str, dict[int, str]] = {}
    section = None
    comps: dict[str, str] = {}
    current = None
    for line in hlo.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section, tables[line] = line, {}
            continue
        if section and re.match(r"^\d+ ", line):
            i, rest = line.split(" ", 1)
            tables[section][int(i)] = rest.strip().strip('"')
            continue
        section = None
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m:
            current = m.group(1)
            comps[current] = ""
        elif current is not None:
            comps[current] += line + "\n"

    def field(s, name):
        return int(re.search(name + r"=(\d+)", s).group(1))

    def stack(frame: int) -> list[tuple[str, str]]:
        out, seen = [], set()
        while frame and frame not in seen and frame in tables.get("StackFrames", {}):
            seen.add(frame)
            f = tables["StackFrames"][frame]
            loc = tables["FileLocations"][field(f, "file_location_id")]
            out.append((tables["FileNames"][field(loc, "file_name_id")],
                        tables["FunctionNames"][field(loc, "function_name_id")]))
            parent = field(f, "parent_frame_id")
            frame = parent if parent != frame else 0
        return out

    index: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    operands: dict[str, list[str]] = {}
    for body in comps.values():
        for line in body.splitlines():
            m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?\b([\w\-]+)\((.*)$", line)
            if not m:
                continue
            name, op, rest = m.groups()
            operands[name] = re.findall(r"%([\w.\-]+)", rest.split("),", 1)[0])
            called = re.search(r"calls=%([\w.\-]+)", line)
            is_dot = op in ("dot", "convolution") or bool(
                called and re.search(r"\b(dot|convolution)\(", comps.get(called.group(1), "")))
            sf = re.search(r"stack_frame_id=(\d+)", line)
            if not sf and called:  # e.g. a fusion XLA made of a reduction: its parts know
                sf = re.search(r"stack_frame_id=(\d+)", comps.get(called.group(1), ""))
            st = stack(int(sf.group(1))) if sf else []
            files = " ".join(f for f, _ in st)
            funcs = " ".join(fn for _, fn in st)
            if is_dot:
                cat = CATEGORIES[0]
            elif "optax" in files or (st and "apply_update" in st[0][1]):
                cat = CATEGORIES[1]
            elif re.search(r"draw_noise|stream_key|binarize|step_noise", funcs) or "random" in files:
                cat = CATEGORIES[4]
            elif "losses.py" in files:
                cat = CATEGORIES[2]
            elif "gather" in op or "gather" in name:
                cat = CATEGORIES[5]
            elif "models.py" in files or "flax" in files:
                cat = CATEGORIES[3]
            else:
                cat = CATEGORIES[6] if st else ""
            index[name] = (cat, st)
    # instructions XLA created without a Python origin (split reductions, layout copies) take
    # the category of the operand that feeds them
    for name, (cat, st) in list(index.items()):
        seen, todo = set(), list(operands.get(name, []))
        while not cat and todo:
            o = todo.pop(0)
            if o in seen or o not in index:
                continue
            seen.add(o)
            cat, st = index[o][0], index[o][1]
            todo += operands.get(o, [])
        index[name] = (cat or CATEGORIES[6], st)
    return index


def profile_epoch(cfg: TrainConfig, images: np.ndarray, *, top: int = 15) -> dict[str, Any]:
    """Where one compiled training epoch spends its time, from a `jax.profiler` trace.

    Runs one warm-up epoch, then one traced epoch; sums the trace's per-instruction execution
    times and groups them by what the instruction computes (see `CATEGORIES`: matched through
    the Python stack XLA records for every HLO instruction). Returns {"epoch_s", "op_s" (sum of
    instruction times in the traced epoch), "traced_epoch_s" (the profiler slows the host side),
    "categories": {name: seconds},
    "top": [(instruction, category, seconds, count, python frame)]}.
    """
    import collections
    import glob
    import gzip
    import json
    import tempfile

    cfg = resolve(cfg)
    _, compiled, state, x, _ = _compiled_epoch(cfg, images)
    index = _hlo_index(compiled.as_text())
    state, _, _ = _run_epoch(compiled, state, x, cfg, 0)  # warm-up
    state, _, epoch_s = _run_epoch(compiled, state, x, cfg, 1)
    with tempfile.TemporaryDirectory(prefix="jaxvae_profile_") as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            state, _, traced_s = _run_epoch(compiled, state, x, cfg, 2)
        files = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
        if not files:
            raise RuntimeError(f"jax.profiler wrote no perfetto trace under {d}")
        events = json.load(gzip.open(files[0]))["traceEvents"]
    per_op: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in index:
            per_op[e["name"]] += e["dur"] / 1e6
            count[e["name"]] += 1
    cats = {c: 0.0 for c in CATEGORIES}
    for name, s in per_op.items():
        cats[index[name][0]] += s

    def frame(name):
        st = [f"{f.rsplit('/', 1)[-1]}:{fn}" for f, fn in index[name][1]
              if "site-packages/jax/" not in f]
        return st[0] if st else ""

    return {"epoch_s": epoch_s, "traced_epoch_s": traced_s, "op_s": sum(per_op.values()),
            "categories": cats,
            "top": [(name, index[name][0], s, count[name], frame(name))
                    for name, s in per_op.most_common(top)]}


# --------------------------------------------------------------------------------------------
# The streamed input against the resident one (scripts/bench.py --stream)


def input_timing(cfg: TrainConfig, *, input: str, steps: int, workers: int | None = None,
                 read_steps: int = 0) -> dict[str, Any]:
    """Training examples/s of the first `steps` steps of epoch 0 fed by `input`.

    "resident": the training split loaded whole as float32 and put on the device, the steps run
    as one compiled scan (the resident path's program). "stream": the streamed path's pieces
    (`jaxvae.stream_data`: Grain loader with `workers` processes, device prefetch, the same epoch
    body over chunks). Both time after compilation (the first chunk / a separate compile). With
    `read_steps`, the streamed input alone is also timed: that many batches read and put on the
    device with no training (the rate the input can sustain). Peak memory is measured by the
    caller (its own RSS); the Grain workers' peak RSS is read here while they run.
    """
    from jaxvae import stream_data

    cfg = resolve(cfg, framework="jax")
    root = jax.random.key(cfg.seed)
    out: dict[str, Any] = {"input": input, "batch": cfg.batch_size}
    if input == "resident":
        t = time.perf_counter()
        train_ds, _ = train.load_datasets(cfg.replace(limit_test=1))
        x = jnp.asarray(train_ds.images)
        out["load_s"] = time.perf_counter() - t
        n, shape = x.shape[0], x.shape[1:]
        trainer = train.Trainer.create(cfg, n)
        state = trainer.init_state(root)
        idx = jnp.asarray(epoch_batches(cfg.seed, 0, n, cfg.batch_size)[:steps])
        fn = xla_options.jit(lambda s, i: trainer.train_epoch(s, x, i, root), donate_argnums=(0,))
        t = time.perf_counter()
        compiled = fn.lower(state, idx).compile()
        out["compile_s"] = time.perf_counter() - t
        t = time.perf_counter()
        state, terms = compiled(state, idx)
        _block((state, terms))
        seconds, done = time.perf_counter() - t, steps
    elif input == "stream":
        source = stream_data.train_source(cfg)
        n, shape = len(source), source.shape
        trainer = train.Trainer.create(cfg, n)
        state = trainer.init_state(root)
        hyper = jax.tree.map(jnp.float32, trainer.hyper)
        feed = stream_data.StreamedEpochs(trainer, source, epochs=1, workers=workers,
                                          all_finite=train._all_finite)
        chunks = max(2, steps // feed.chunk)
        reads = max(1, read_steps // feed.chunk) if read_steps else 0
        feed.epochs = -(-(chunks + reads) * feed.chunk // trainer.steps_per_epoch)  # enough data
        out.update(workers=feed.workers, chunk=feed.chunk, prefetch=feed.prefetch,
                   batch_mib=cfg.batch_size * int(np.prod(source.shape)) * 4 / 2**20)
        try:
            t = time.perf_counter()
            feed._start(0)
            x = next(feed.feed)
            out["first_chunk_s"] = time.perf_counter() - t  # worker start-up + first decode
            t = time.perf_counter()
            compiled = feed.fn.lower(state, x, root, hyper, None).compile()
            out["compile_s"] = time.perf_counter() - t
            state, terms, _ = compiled(state, x, root, hyper, None)  # the first chunk: warm-up
            _block((state, terms))
            t = time.perf_counter()
            for _ in range(chunks - 1):
                state, terms, _ = compiled(state, next(feed.feed), root, hyper, None)
            _block((state, terms))
            seconds, done = time.perf_counter() - t, (chunks - 1) * feed.chunk
            if reads:  # the input alone: batches to the device, nothing trained
                t = time.perf_counter()
                for _ in range(reads):
                    _block(next(feed.feed))
                out["read_examples_per_s"] = reads * feed.chunk * cfg.batch_size / (
                    time.perf_counter() - t)
            out["children_peak_rss_mib"] = _children_peak_rss_mib()  # the workers, still running
        finally:
            feed.close()
            feed.it = None
        import gc

        gc.collect()  # ends the Grain iterator: its workers exit and are waited for
    else:
        raise ValueError(f"input {input!r}: resident or stream")
    out.update(n=n, steps=done, train_s=seconds,
               examples_per_s=done * cfg.batch_size / seconds,
               float32_dataset_mib=n * int(np.prod(shape)) * 4 / 2**20)
    return out


def _children_peak_rss_mib() -> list[float]:
    """Peak RSS (VmHWM, MiB) of each live child process (the Grain workers). Read from /proc:
    `getrusage(RUSAGE_CHILDREN)` would report the parent's RSS at the fork before each exec."""
    from pathlib import Path

    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except OSError:
            pass
    peaks = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return sorted(peaks, reverse=True)
