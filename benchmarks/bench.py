"""Side-by-side CPU benchmark: srp-np versus dense PyTorch (GitHub issue 5).

Methods, all on the same srp-np/1 graph (same weights and thresholds, float32):

* ``srp-np``   the event-driven Numba simulator (:class:`srp_np.simulator.Simulator`).
* ``dense``    the strongest dense PyTorch CPU baseline we know: layer by layer
  over all time steps at once (each conv / linear / pool runs on all S·B
  frames in one call, channels-last, the constant-input first layer computed
  once, the IF over time a loop of in-place tensor ops), glibc allocator tuned
  with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_``.
* ``stepwise`` the authors' style: one time step at a time through the whole
  network, IF state kept per layer (no constant-layer caching).

Each method runs in its own worker process (so that allocator settings and
peak-RSS numbers do not leak between methods); the parent checks that the
predictions agree and prints one table. Ratios are only meaningful within one
run (the machine is shared). Usage::

    python benchmarks/bench.py --quick          # VGG-16 + ResNet-20, batch 64 and 1, tau+T = 8
    python benchmarks/bench.py                  # full: also tau+T = 32, shipped models, memory check
    python benchmarks/bench.py --isa both       # the host's instruction set, then both sides on AVX2

``--isa avx2`` restricts both sides to AVX2 in the same run: srp-np through
``NUMBA_CPU_FEATURES`` (the host's features with every AVX-512 feature off),
PyTorch through ``ATEN_CPU_CAPABILITY=avx2`` and ``DNNL_MAX_CPU_ISA=AVX2``.
The header states the CPU model; each table states the code path srp-np
compiled (:mod:`srp_np.kernels.isa`) and PyTorch's CPU capability.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "10000000000", "MALLOC_TRIM_THRESHOLD_": "10000000000",
              "MALLOC_TOP_PAD_": "1073741824"}
TAU = 4


# ----------------------------------------------------------------------------- memory
def reset_peak_rss():
    """Reset the kernel's VmHWM for this process (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ----------------------------------------------------------------------------- models & data
def get_model(name: str):
    from nets import calibration_images, resnet20, vgg16
    from srp_np.model import load_model
    if name == "vgg16":
        return vgg16(calibration_images(32))
    if name == "resnet20":
        return resnet20(calibration_images(32))
    return load_model(str(ROOT / "weights" / f"{name}.npz"))


def get_images(model, n: int) -> np.ndarray:
    from nets import calibration_images
    from srp_np.datasets import fit_to_shape, load_shipped_test_set, to_float
    shape = tuple(model.input_shape)
    if model.graph.get("arch", "").endswith("-random"):
        x = calibration_images(n + 32, shape)[32:]          # not the calibration images
        return x
    xs = load_shipped_test_set()[0]
    x = to_float(np.asarray(xs[:n]))
    if x.ndim == 3:
        x = x[:, None]
    x = fit_to_shape(x, shape)
    return model.preprocess(x)


# ----------------------------------------------------------------------------- torch baselines
def torch_graph(model, channels_last=True):
    """Torch parameters of the graph, in the model's C-order layout."""
    import torch
    params = {}
    for node in model.nodes:
        if node["op"] in ("conv2d", "linear"):
            w = torch.from_numpy(np.ascontiguousarray(model.weight(node), dtype=np.float32))
            if node["op"] == "conv2d" and channels_last:
                w = w.contiguous(memory_format=torch.channels_last)
            b = model.weight(node, "bias")
            params[node["name"]] = (w, None if b is None else torch.from_numpy(np.asarray(b, np.float32)))
    return params


def _apply(torch, F, model, node, params, ins):
    op = node["op"]
    p = lambda k, d: (node.get(k, d)[0] if isinstance(node.get(k, d), list) else node.get(k, d))
    if op == "conv2d":
        w, b = params[node["name"]]
        return F.conv2d(ins[0], w, b, stride=p("stride", 1), padding=p("padding", 0))
    if op == "linear":
        w, b = params[node["name"]]
        return F.linear(ins[0], w, b)
    if op == "avgpool2d":
        k = p("kernel", 2)
        return F.avg_pool2d(ins[0], k, p("stride", k))
    if op == "flatten":
        return ins[0].reshape(ins[0].shape[0], -1)
    if op == "add":
        out = ins[0] + ins[1]
        for extra in ins[2:]:
            out = out + extra
        return out
    raise ValueError(op)


def dense_torch(model, params, x, tau, T, eps=1e-3, channels_last=True):
    """Layer by layer over all S·B frames; returns T×B×K mean outputs (last step only needed)."""
    import torch
    import torch.nn.functional as F
    S, B = tau + T, x.shape[0]
    cl = torch.channels_last if channels_last else torch.contiguous_format
    vals = {"input": ("static", torch.from_numpy(x).contiguous(memory_format=cl))}
    for node in model.nodes:
        name, op = node["name"], node["op"]
        ins = [vals[s] for s in node["inputs"]]
        if op != "qcfs":
            if all(k == "static" for k, _ in ins):
                vals[name] = ("static", _apply(torch, F, model, node, params, [v for _, v in ins]))
            else:
                frames = [v if k == "frames" else v.unsqueeze(0).expand((S,) + tuple(v.shape)).reshape(
                    (S * B,) + tuple(v.shape[1:])) for k, v in ins]
                vals[name] = ("frames", _apply(torch, F, model, node, params, frames))
            continue
        th = float(node["threshold"])
        kind, cur = ins[0]
        shp = tuple(cur.shape[1:])
        fmt = torch.channels_last if (len(shp) == 3 and channels_last) else torch.contiguous_format
        v = torch.full((B,) + shp, th / 2).contiguous(memory_format=fmt)
        sb = torch.empty((B,) + shp, dtype=torch.bool).contiguous(memory_format=fmt)
        out = torch.empty((S * B,) + shp).contiguous(memory_format=fmt)
        mask = None
        for t in range(S):
            if t == tau and tau > 0:
                mask = (v > eps * th).to(v.dtype)
                v.fill_(th / 2)
            v.add_(cur if kind == "static" else cur[t * B:(t + 1) * B])
            o = out[t * B:(t + 1) * B]
            torch.ge(v, th, out=sb)
            o.copy_(sb)
            o.mul_(th)
            v.sub_(o)
            if mask is not None:
                o.mul_(mask)
        vals[name] = ("frames", out)
    kind, y = vals[model.output]
    y = y.reshape(S, B, -1)[tau:] if kind == "frames" else y.unsqueeze(0).expand(T, B, -1)
    return (y.double().cumsum(0) / torch.arange(1, T + 1, dtype=torch.float64).view(T, 1, 1)).numpy()


def stepwise_torch(model, params, x, tau, T, eps=1e-3):
    """The authors' style: every step runs the whole network on B images."""
    import torch
    import torch.nn.functional as F
    B = x.shape[0]
    xin = torch.from_numpy(x)
    state, masks = {}, {}
    acc = torch.zeros(B, model.num_classes, dtype=torch.float64)
    outs = []
    for t in range(tau + T):
        if t == tau and tau > 0:
            for q in model.qcfs_nodes:
                th = float(q["threshold"])
                masks[q["name"]] = (state[q["name"]] > eps * th).float()
                state[q["name"]] = torch.full_like(state[q["name"]], th / 2)
        vals = {"input": xin}
        for node in model.nodes:
            ins = [vals[s] for s in node["inputs"]]
            if node["op"] == "qcfs":
                th = float(node["threshold"])
                v = state.get(node["name"])
                if v is None:
                    v = state[node["name"]] = torch.full_like(ins[0], th / 2)
                v += ins[0]
                s = (v >= th).float()
                v -= s * th
                if node["name"] in masks:
                    s = s * masks[node["name"]]
                vals[node["name"]] = s * th
            else:
                vals[node["name"]] = _apply(torch, F, model, node, params, ins)
        if t >= tau:
            acc += vals[model.output].double()
            outs.append((acc / (t - tau + 1)).numpy().copy())
    return np.stack(outs)


def torch_call(method, model, params, x, tau, T, channels_last):
    if method == "dense":
        return dense_torch(model, params, x, tau, T, channels_last=channels_last)
    return stepwise_torch(model, params, x, tau, T)


# ----------------------------------------------------------------------------- worker
class Runner:
    """One method on one model inside a worker process."""

    def __init__(self, method, mname, threads, nmax):
        self.method, self.mname = method, mname
        self.model = get_model(mname)
        self.x_all = get_images(self.model, nmax)
        self.info = {}
        if method == "srp-np":
            import numba
            from srp_np.warmup import cache_is_warm, warmup
            from srp_np.simulator import Simulator
            if threads:
                numba.set_num_threads(threads)
            t0 = time.perf_counter()
            warm = cache_is_warm()
            warmup(np.float32)
            from srp_np.kernels.isa import describe
            self.info = dict(jit_s=time.perf_counter() - t0, jit_cache_warm=warm, isa=describe())
            self.sim = Simulator(self.model, np.float32)
            self.sim.run(self.x_all[:1], TAU, 4)
        else:
            import torch
            torch.set_num_threads(threads or os.cpu_count())
            self.info = dict(isa=f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
                                 + (f", oneDNN max ISA {os.environ['DNNL_MAX_CPU_ISA']}"
                                    if os.environ.get("DNNL_MAX_CPU_ISA") else ""))
            self.params = {True: torch_graph(self.model, True), False: torch_graph(self.model, False)}
            self.layout = {}

    def time(self, S, B, n):
        """Seconds for n images at batch B (best layout for dense), peak RSS, predictions, counts."""
        T = S - TAU
        x = self.x_all[:n]
        extra = {}
        if self.method == "srp-np":
            from srp_np.simulator import SimResult
            reset_peak_rss()
            t0 = time.perf_counter()
            parts = [self.sim.run(x[i:i + B], TAU, T) for i in range(0, n, B)]
            dt = time.perf_counter() - t0
            r = SimResult.concatenate(parts)
            preds = r.predictions()[-1]
            extra = dict(spikes=float(sum(v.sum() + r.spikes_stage1[k].sum() for k, v in r.spikes.items())) / n,
                         sops=float(sum(v.sum() + r.sops_stage1[k].sum() for k, v in r.sops.items())) / n,
                         neurons=int(sum(r.neurons.values())))
        else:
            import torch
            with torch.inference_mode():
                key = (S, B)
                if key not in self.layout:
                    # warm oneDNN up for this shape; the dense baseline keeps the faster memory format
                    tl = {}
                    for fmt in ((True, False) if self.method == "dense" else (False,)):
                        t0 = time.perf_counter()
                        torch_call(self.method, self.model, self.params[fmt], x[:B], TAU, T, fmt)
                        tl[fmt] = time.perf_counter() - t0
                    self.layout[key] = min(tl, key=tl.get)
                cl = self.layout[key]
                reset_peak_rss()
                t0 = time.perf_counter()
                outs = [torch_call(self.method, self.model, self.params[cl], x[i:i + B], TAU, T, cl)
                        for i in range(0, n, B)]
                dt = time.perf_counter() - t0
            preds = np.concatenate([o[-1] for o in outs]).argmax(-1)
            extra = dict(channels_last=cl)
        return dict(S=S, B=B, n=n, seconds=dt, img_s=n / dt, peak_mb=peak_rss_mb(), preds=preds.tolist(), **extra)

    def memcheck(self, n):
        xm = np.concatenate([self.x_all] * (-(-n // len(self.x_all))))[:n]
        reset_peak_rss()
        t0 = time.perf_counter()
        self.sim.run(xm, TAU, 4)
        return dict(n=n, peak_mb=peak_rss_mb(), seconds=time.perf_counter() - t0)


def worker(args):
    """Serve timing requests (one JSON line each) on stdin; answer one JSON line each."""
    spec = json.loads(args.worker)
    runner = Runner(spec["method"], spec["model"], spec.get("threads"), spec["nmax"])
    print(json.dumps({"ready": True, **runner.info}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("quit"):
            break
        if "memcheck" in req:
            out = runner.memcheck(req["memcheck"])
        else:
            out = runner.time(req["S"], req["B"], req["n"])
        print(json.dumps(out), flush=True)


class Worker:
    def __init__(self, spec, env_extra=None):
        env = dict(os.environ, **(env_extra or {}))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
        self.p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit("a benchmark worker died")
        return json.loads(line)

    def ask(self, req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.p.stdin.write(json.dumps({"quit": True}) + "\n")
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait()


def cold_compile_seconds() -> float:
    """Compile every kernel in a fresh process with an empty Numba cache."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        code = ("import time,numpy as np;t=time.perf_counter();from srp_np.warmup import warmup;"
                "warmup(np.float32);print(time.perf_counter()-t)")
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
        try:
            return float(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return float("nan")


def avx2_env(method: str) -> dict:
    """Environment restricting one method to AVX2 (no AVX-512)."""
    if method == "srp-np":
        import llvmlite.binding as ll
        import numba  # noqa: F401
        feats = ll.get_host_cpu_features()
        for k in list(feats):
            if k.startswith("avx512") or k in ("avx10.1-256", "avx10.1-512", "evex512", "amx-tile", "amx-int8",
                                               "amx-bf16"):
                feats[k] = False
        return {"NUMBA_CPU_FEATURES": feats.flatten()}
    return {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2"}


def cpu_model() -> str:
    """The CPU's model name, family/model numbers and LLVM's name for it (e.g. ``znver4``):
    virtual machines often show only "AMD EPYC" as the model name."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            if ":" in line:
                k, v = (x.strip() for x in line.split(":", 1))
                info.setdefault(k, v)
            if not line.strip() and info:
                break
    except OSError:
        pass
    import llvmlite.binding as ll
    import numba  # noqa: F401
    name = info.get("model name", platform.processor() or "?")
    fam = f", family {info['cpu family']} model {info['model']}" if "cpu family" in info else ""
    return f"{name}{fam} (LLVM: {ll.get_host_cpu_name()})"


def machine() -> str:
    cpu = cpu_model()
    import numba
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
            f"load average at start {load:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="VGG-16 + ResNet-20 at tau+T = 8 only, 1 repeat")
    ap.add_argument("--models", default=None, help="comma list: vgg16,resnet20, shipped names (resnet20_fmnist)")
    ap.add_argument("--steps", default=None, help="comma list of tau+T (tau = 4)")
    ap.add_argument("--batches", default="64,1")
    ap.add_argument("--methods", default="srp-np,dense,stepwise")
    ap.add_argument("--images64", type=int, default=64, help="images timed at batch 64")
    ap.add_argument("--images1", type=int, default=4, help="images timed at batch 1")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--pause", type=float, default=0.05,
                    help="idle seconds before each timed call (OpenMP workers spin for a few ms after a call)")
    ap.add_argument("--threads", type=int, default=0, help="threads for every method (0: all cores)")
    ap.add_argument("--memcheck", default=None, help="comma list of image counts for the VGG-16 peak-RSS check")
    ap.add_argument("--no-compile-check", action="store_true")
    ap.add_argument("--isa", choices=["host", "avx2", "both"], default="host",
                    help="instruction sets: the host's, both sides restricted to AVX2, or one table of each")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    shipped = [p.stem for p in sorted((ROOT / "weights").glob("*.npz"))]
    models = args.models.split(",") if args.models else (["vgg16", "resnet20"] + ([] if args.quick else shipped))
    steps = [int(s) for s in (args.steps or ("8" if args.quick else "8,32")).split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    methods = args.methods.split(",")
    repeat = args.repeat or (1 if args.quick else 2)
    memcheck = [int(v) for v in args.memcheck.split(",")] if args.memcheck else ([] if args.quick else [64, 256])
    images = {"64": args.images64, "1": args.images1}
    for b in batches:
        images.setdefault(str(b), max(b, args.images64))
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    print(f"# {machine()}", flush=True)
    print(f"# command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}", flush=True)

    isas = ["host", "avx2"] if args.isa == "both" else [args.isa]
    all_results = {}
    for isa in isas:
        all_results[isa] = run_all(args, models, methods, steps, batches, images, repeat, memcheck, isa)
    cold = None if args.no_compile_check else cold_compile_seconds()
    if args.json:
        Path(args.json).write_text(json.dumps({isa: {f"{k[0]}|{k[1]}": v for k, v in res.items()}
                                               for isa, res in all_results.items()}, indent=1))
    for isa, results in all_results.items():
        print(f"## instruction sets: {'host' if isa == 'host' else 'both sides restricted to AVX2'}")
        for m in methods:
            r = next((v for k, v in results.items() if k[1] == m), None)
            if r and r.get("isa"):
                print(f"#   {m}: {r['isa']}")
        print()
        print_table(results, models, methods, steps, batches, None)
    if cold is not None:
        print(f"cold JIT compile of all kernels (float32, empty cache, fresh process): {cold:.1f} s")


def run_all(args, models, methods, steps, batches, images, repeat, memcheck, isa):
    """Time every (model, tau+T, batch) for every method with the given instruction sets."""
    results = {}
    for mname in models:
        workers = {}
        for method in methods:
            print(f"starting {method} on {mname} ({isa}) ...", file=sys.stderr, flush=True)
            env = dict(MALLOC_ENV) if method != "srp-np" else {}
            if isa == "avx2":
                env.update(avx2_env(method))
            workers[method] = Worker(dict(method=method, model=mname, threads=args.threads, nmax=max(images.values())),
                                     env)
            results[(mname, method)] = dict(rows=[], **workers[method].info)
        for S in steps:
            for B in batches:
                best = {}
                for rep in range(repeat):            # interleaved, best of `repeat`
                    # rotate the order, so that each method also runs after each other one (a worker's
                    # idle threads keep spinning for a few ms after its call and slow the next one)
                    for method in methods[rep % len(methods):] + methods[:rep % len(methods)]:
                        time.sleep(args.pause)       # let the previous worker's threads stop spinning
                        r = workers[method].ask(dict(S=S, B=B, n=images[str(B)]))
                        if method not in best or r["seconds"] < best[method]["seconds"]:
                            best[method] = r
                        print(f"  [{mname} {isa} S={S} B={B} {method}] {r['img_s']:.1f} img/s", file=sys.stderr,
                              flush=True)
                for method in methods:
                    results[(mname, method)]["rows"].append(best[method])
        if "srp-np" in workers and mname == "vgg16" and isa == "host":
            results[(mname, "srp-np")]["memcheck"] = [workers["srp-np"].ask({"memcheck": n}) for n in memcheck]
        for w in workers.values():
            w.close()
    return results


def print_table(results, models, methods, steps, batches, cold):
    hdr = ["model", "B", "tau+T", "srp-np img/s", "dense img/s", "stepwise img/s", "x dense", "x stepwise",
           "agree", "spikes/img", "Msops/img", "Gsops/s", "peak MB srp/dense/step"]
    rows = []
    for mname in models:
        for S in steps:
            for B in batches:
                get = lambda m: next((r for r in results.get((mname, m), {}).get("rows", [])
                                      if r["S"] == S and r["B"] == B), None)
                s, d, w = get("srp-np"), get("dense"), get("stepwise")
                f = lambda r: f"{r['img_s']:.1f}" if r else "-"
                ratio = lambda a, b: f"{a['img_s'] / b['img_s']:.2f}" if a and b else "-"
                agree = []
                for other in (d, w):
                    if s and other:
                        agree.append(f"{np.mean(np.array(s['preds']) == np.array(other['preds'])) * 100:.0f}%")
                rows.append([mname, str(B), str(S), f(s), f(d), f(w), ratio(s, d), ratio(s, w),
                             "/".join(agree) or "-",
                             f"{s['spikes']:.3g}" if s else "-", f"{s['sops'] / 1e6:.1f}" if s else "-",
                             f"{s['sops'] * s['img_s'] / 1e9:.2f}" if s else "-",
                             "/".join(f"{r['peak_mb']:.0f}" if r else "-" for r in (s, d, w))])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
    line = lambda cells: "| " + " | ".join(c.rjust(wd) for c, wd in zip(cells, widths)) + " |"
    print(line(hdr))
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in rows:
        print(line(r))
    print()
    for mname in models:
        r = results.get((mname, "srp-np"))
        if r:
            print(f"{mname}: srp-np warmup() {r['jit_s']:.2f} s (Numba cache "
                  f"{'warm' if r['jit_cache_warm'] else 'cold'}); firing rate "
                  f"{np.mean([x['spikes'] / x['S'] / x_neurons(x) for x in r['rows']]) * 100:.1f}% of neurons per step")
            for m in r.get("memcheck", []):
                print(f"  memory check: {m['n']} images at batch {m['n']} (chunked), tau+T=8: peak RSS "
                      f"{m['peak_mb']:.0f} MB, {m['seconds']:.1f} s")
    print("agree: % of images whose final prediction equals the dense / stepwise baseline's")


def x_neurons(row):
    return row.get("neurons", 1) or 1


if __name__ == "__main__":
    main()
