"""Compare one SinGAN training iteration per scale between `singan bench iteration` and the
PyTorch version in iteration.py, on this machine, in one run.

Both programs time the same iteration at the same pyramid sizes with the same timing rule (one
warm-up, then --steps timed iterations; median and minimum). The PyTorch run gets the pyramid
sizes from our output, and the same thread count. With --repeats R both run R times, in
alternation, and each scale reports the median of the R per-run medians. The matrix-product
peak is the median throughput of a few float32 torch.matmul calls of size --peak-size, with the
same thread count. --omp-wait-policy sets OMP_WAIT_POLICY for the iteration.py runs only, so the
peak runs with the OpenMP runtime's default unless OMP_WAIT_POLICY is already in the environment.

Usage:
    python benches/torch/compare.py [IMAGE] [--steps N] [--repeats R] [--scales LIST]
        [--threads T] [--singan target/release/singan] [--device cpu|cuda]

Without IMAGE the pyramid is that of singan's built-in sample image. --device is passed to
both programs, so `--device cuda` compares our CUDA kernels with PyTorch on the same GPU.

Needs a release build (`cargo build --release`) and `pip install torch`.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import warnings

from argument_types import parse_scales, positive_int

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(os.path.dirname(HERE))
ROW = re.compile(
    r"^(?P<scale>\d+)\s+(?P<h>\d+)x(?P<w>\d+)\s+(?P<width>\d+)\s+(?P<median>[\d.]+)\s+"
    r"(?P<min>[\d.]+)\s+(?P<gflop>[\d.]+)\s+[\d.inf]+\s*$"
)

# Spread of one program's per-run medians at one scale, (max - min) / median, above which the
# comparison warns that the machine's speed changed between runs.
NOISY_SPREAD = 0.2

# The project's speed targets against PyTorch on the same machine.
COARSE_SCALES = 4
COARSE_TARGET = 1.0 / 3.0
TOTAL_TARGET = 0.7


def noisy_scales(runs, program):
    """Returns a text per scale whose per-run medians spread by more than NOISY_SPREAD."""
    notes = []
    for k in sorted(runs[0]):
        medians = [run_rows[k]["median"] for run_rows in runs]
        middle = statistics.median(medians)
        if middle > 0 and (max(medians) - min(medians)) / middle > NOISY_SPREAD:
            notes.append(f"{program} scale {k} ({min(medians):.1f} to {max(medians):.1f} ms)")
    return notes


def run(command, env=None):
    """Run a command and return its stdout; exit with its output when it fails."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    except OSError as error:
        sys.exit(
            f"cannot run {command[0]}: {error.strerror}; pass the singan binary that "
            "`cargo build --release` writes to target/release/singan"
        )
    if result.returncode != 0:
        sys.exit(
            f"command failed with status {result.returncode}: {' '.join(command)}\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def parse_table(text, program):
    """Parse the rows of a `bench iteration` table into {scale: row}, and the thread count."""
    rows = {}
    threads = None
    for line in text.splitlines():
        found = re.search(r"threads: (\d+)", line)
        if found:
            threads = int(found.group(1))
        match = ROW.match(line.strip())
        if match:
            rows[int(match["scale"])] = {
                "size": (int(match["h"]), int(match["w"])),
                "width": int(match["width"]),
                "median": float(match["median"]),
                "min": float(match["min"]),
                "gflop": float(match["gflop"]),
            }
    if not rows:
        sys.exit(f"no timing rows found in the output of {program}:\n{text}")
    return rows, threads


def import_torch():
    """Import torch, hiding its warning about missing numpy. main imports it only after
    checking the arguments, because the import takes seconds."""
    # torch warns at import when numpy is missing; this script does not use numpy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch

    return torch


def pyramid_scale_count(image):
    """Return the number of scales in the pyramid of IMAGE, or of singan's built-in sample
    image when IMAGE is None, with iteration.py's port of singan's pyramid rule."""
    sys.path.insert(0, HERE)
    import iteration

    size = iteration.SAMPLE_IMAGE_SIZE if image is None else iteration.image_size(image)
    return len(iteration.pyramid_sizes(*size))


def matmul_throughputs(torch, size, repeats, device):
    """Time `repeats` float32 matmuls of size x size after one warm-up; return each one's
    throughput in GFLOP/s."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.matmul(a, b)
    throughputs = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        throughputs.append(2.0 * size**3 / (time.perf_counter() - started) / 1e9)
    return throughputs


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Compare singan's training iteration with PyTorch's on this machine."
    )
    parser.add_argument(
        "image",
        nargs="?",
        help="image whose pyramid gives the sizes (PNG or JPEG; default: singan's built-in "
        "sample image)",
    )

    parser.add_argument(
        "--steps", type=positive_int, default=5, help="timed iterations per scale (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="runs of each program, alternating; each scale reports the median of the runs "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--scales",
        type=parse_scales,
        help="scales to time, as a comma-separated list such as 0,1,9 (default: all)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="threads for both programs (default: rayon's and torch's defaults, which are "
        "both the number of logical CPUs; ours receives it as RAYON_NUM_THREADS)",
    )

    parser.add_argument(
        "--singan",
        default=os.path.join(REPOSITORY, "target", "release", "singan"),
        help="path of the singan binary (default: target/release/singan)",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="device for both (default: cpu)"
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=["active", "passive"],
        help="OMP_WAIT_POLICY in the environment of the iteration.py runs only, not of this "
        "script's matmul peak or of singan (default: unset, so the OpenMP runtime's own "
        "default applies); passive stops idle threads from spinning, which matters on a "
        "loaded machine",
    )

    parser.add_argument(
        "--peak-size",
        type=positive_int,
        default=4096,
        help="matrix side of the matmul peak (default: %(default)s)",
    )
    parser.add_argument(
        "--peak-repeats",
        type=positive_int,
        default=5,
        help="timed matmuls for the peak, both before and after the iteration runs "
        "(default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if not os.path.isfile(args.singan):
        sys.exit(f"singan binary not found at {args.singan}; run `cargo build --release`")
    if not os.access(args.singan, os.X_OK):
        sys.exit(
            f"--singan {args.singan} is not executable; pass the singan binary that "
            "`cargo build --release` writes to target/release/singan"
        )
    torch = import_torch()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "--device cuda: torch reports no usable CUDA device (a CUDA build of torch reports "
            "none on a machine without an NVIDIA GPU and driver); use --device cpu"
        )

    env = dict(os.environ)
    if args.threads is not None:
        env["RAYON_NUM_THREADS"] = str(args.threads)
    # Only the PyTorch child gets the wait policy, so that spinning OpenMP threads of this
    # process cannot slow down either timed program.
    torch_env = dict(os.environ)
    if args.omp_wait_policy is not None:
        torch_env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    ours_command = [args.singan, "bench", "iteration"]
    if args.image is not None:
        ours_command.append(args.image)
    ours_command += ["--steps", str(args.steps), "--device", args.device]
    if args.scales is not None:
        ours_command += ["--scales", ",".join(str(k) for k in args.scales)]

    # The peak is sampled before and after the iteration runs, since other load on the
    # machine may change in between.
    torch.set_num_threads(args.threads or torch.get_num_threads())
    peak_samples = matmul_throughputs(torch, args.peak_size, args.peak_repeats, device)

    ours_runs, torch_runs = [], []
    threads = None
    for repeat in range(args.repeats):
        print(f"run {repeat + 1} of {args.repeats}: singan", file=sys.stderr, flush=True)
        rows, threads = parse_table(run(ours_command, env), "singan")
        ours_runs.append(rows)
        if threads is None:
            threads = args.threads or torch.get_num_threads()
        sizes = [rows[k]["size"] for k in sorted(rows)]
        scales = sorted(rows)
        # iteration.py indexes --sizes by scale, so pass sizes for scales 0..max and let the
        # untimed ones be placeholders of a valid size.
        full_sizes = [rows.get(k, {"size": sizes[0]})["size"] for k in range(max(scales) + 1)]
        torch_command = [
            sys.executable,
            os.path.join(HERE, "iteration.py"),
            "--sizes",
            ",".join(f"{h}x{w}" for h, w in full_sizes),
            "--scales",
            ",".join(str(k) for k in scales),
            "--steps",
            str(args.steps),
            "--threads",
            str(threads),
            "--device",
            args.device,
        ]
        print(f"run {repeat + 1} of {args.repeats}: PyTorch", file=sys.stderr, flush=True)
        torch_rows, _ = parse_table(run(torch_command, torch_env), "iteration.py")
        torch_runs.append(torch_rows)

    torch.set_num_threads(threads)
    peak_samples += matmul_throughputs(torch, args.peak_size, args.peak_repeats, device)
    peak = statistics.median(peak_samples)

    policy = torch_env.get("OMP_WAIT_POLICY", "runtime default")
    print(
        f"device: {args.device}, threads: {threads}, torch {torch.__version__}, "
        f"PyTorch OMP_WAIT_POLICY: {policy}"
    )
    print(
        f"matmul peak: {peak:.1f} GFLOP/s (float32 {args.peak_size}x{args.peak_size}, median "
        f"of {len(peak_samples)}, half before and half after the runs; best "
        f"{max(peak_samples):.1f}, worst {min(peak_samples):.1f})"
    )
    print(f"timed iterations per scale: {args.steps}, runs: {args.repeats}")
    header = (
        f"{'scale':<6} {'size':>9} {'width':>6} {'GFLOP':>8} {'ours ms':>10} "
        f"{'PyTorch ms':>11} {'ratio':>7} {'ours %peak':>11} {'PyTorch %peak':>14}"
    )
    print(header)
    total_ours = total_torch = total_gflop = 0.0
    ratios = {}
    for k in sorted(ours_runs[0]):
        ours_ms = statistics.median(run_rows[k]["median"] for run_rows in ours_runs)
        torch_ms = statistics.median(run_rows[k]["median"] for run_rows in torch_runs)
        row = ours_runs[0][k]
        gflop = row["gflop"]
        torch_gflop = torch_runs[0][k]["gflop"]
        if abs(torch_gflop - gflop) > 0.01 + 1e-3 * gflop:
            print(
                f"warning: scale {k}: GFLOP counts differ (ours {gflop}, PyTorch {torch_gflop})",
                file=sys.stderr,
            )
        ratios[k] = ours_ms / torch_ms
        total_ours += ours_ms
        total_torch += torch_ms
        total_gflop += gflop
        size_text = f"{row['size'][0]}x{row['size'][1]}"
        ours_share = 100.0 * gflop / (ours_ms / 1e3) / peak
        torch_share = 100.0 * gflop / (torch_ms / 1e3) / peak
        print(
            f"{k:<6} {size_text:>9} {row['width']:>6} {gflop:>8.2f} {ours_ms:>10.1f} "
            f"{torch_ms:>11.1f} {ratios[k]:>7.2f} {ours_share:>10.1f}% {torch_share:>13.1f}%"
        )
    total_ratio = total_ours / total_torch
    print(
        f"{'total':<6} {'':>9} {'':>6} {total_gflop:>8.2f} {total_ours:>10.1f} "
        f"{total_torch:>11.1f} {total_ratio:>7.2f} "
        f"{100.0 * total_gflop / (total_ours / 1e3) / peak:>10.1f}% "
        f"{100.0 * total_gflop / (total_torch / 1e3) / peak:>13.1f}%"
    )

    if args.repeats > 1:
        print("per-run medians, ms (ours | PyTorch):")
        for k in sorted(ours_runs[0]):
            ours_list = " ".join(f"{run_rows[k]['median']:.1f}" for run_rows in ours_runs)
            torch_list = " ".join(f"{run_rows[k]['median']:.1f}" for run_rows in torch_runs)
            print(f"  scale {k}: {ours_list} | {torch_list}")
        noisy = noisy_scales(ours_runs, "ours") + noisy_scales(torch_runs, "PyTorch")
        if noisy:
            print(
                f"note: per-run medians spread by more than {NOISY_SPREAD:.0%} at "
                + ", ".join(noisy)
                + ". The machine's speed changed between runs: read the per-run medians, "
                "or run again."
            )

    every = all(r < 1.0 for r in ratios.values())
    coarse = [k for k in sorted(ratios) if k < COARSE_SCALES]
    coarse_met = bool(coarse) and all(ratios[k] <= COARSE_TARGET for k in coarse)
    # Without --scales singan times every scale, so the pyramid's scales are counted only
    # when --scales is given.
    partial_note = ""
    if args.scales is not None:
        try:
            scale_count = pyramid_scale_count(args.image)
        except (OSError, ValueError) as error:
            print(f"warning: cannot count the scales of the pyramid: {error}", file=sys.stderr)
            partial_note = " (not checked whether every scale was timed)"
        else:
            if set(ratios) != set(range(scale_count)):
                partial_note = " (not all scales were timed)"
    print("targets (ratio = ours / PyTorch):")
    print(f"  every scale below 1: {'met' if every else 'not met'}{partial_note}")
    print(
        f"  scales 0-{COARSE_SCALES - 1} at most {COARSE_TARGET:.2f} (3x faster): "
        f"{'met' if coarse_met else 'not met'}"
        + ("" if len(coarse) == COARSE_SCALES else " (not all of these scales were timed)")
    )
    print(
        f"  total at most {TOTAL_TARGET}: {'met' if total_ratio <= TOTAL_TARGET else 'not met'}"
        f"{partial_note}"
    )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        print(
            "interrupted (Ctrl-C); the comparison prints nothing until every run has finished",
            file=sys.stderr,
        )
        sys.exit(130)
