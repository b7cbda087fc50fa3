"""Time one SinGAN training iteration per scale in PyTorch, for comparison with
`singan bench iteration`.

Each scale gets a fresh generator and critic of that scale's width and fresh Adam optimisers.
One iteration is a critic step (WGAN loss with the gradient penalty, whose input gradient is
taken with create_graph=True) followed by a generator step (10 * reconstruction MSE minus the
mean critic score of the fake). The inputs from the coarser scales are random tensors, as in
`singan bench iteration`, so each scale is timed on its own. One warm-up iteration runs before
the timed ones. The output has the same columns and the same convolution FLOP count as
`singan bench iteration`: median and minimum milliseconds, GFLOP and GFLOP/s.

Usage:
    python benches/torch/iteration.py [IMAGE] [--sizes 26x34,32x42,...] [--scales 0,1]
        [--steps N] [--threads T] [--device cpu|cuda]

Without IMAGE or --sizes the pyramid is that of the built-in 96x128 sample image. IMAGE may be
a PNG or a JPEG; only its size is read.
"""

import argparse
import math
import struct
import sys
import time
import warnings
import zlib

from argument_types import parse_scales, positive_int


def exit_interrupted():
    """Exit with status 130 (128 + SIGINT) and a one-line message instead of a traceback."""
    print("interrupted (Ctrl-C); the rows printed so far are complete", file=sys.stderr)
    sys.exit(130)


# torch warns at import when numpy is missing; this benchmark does not use numpy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

# Importing torch takes seconds, so Ctrl-C may arrive during the import.
try:
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
    from torch import nn  # noqa: E402
except KeyboardInterrupt:
    exit_interrupted()

# Defaults of the Rust trainer (src/singan/config.rs).
MIN_SIZE = 25
MAX_SIZE = 250
SCALE_FACTOR_INIT = 0.75
NUM_BLOCKS = 5
KERNEL_SIZE = 3
PADDING = 0
MAX_FEATURES = 32
MIN_FEATURES = 32
LEAKY_SLOPE = 0.2
LEARNING_RATE = 5e-4
ADAM_BETAS = (0.5, 0.9)
PENALTY_WEIGHT = 0.1
RECONSTRUCTION_WEIGHT = 10.0
ADVERSARIAL_WEIGHT = 1.0
NOISE_AMPLITUDE = 0.1
SAMPLE_IMAGE_SIZE = (96, 128)


# --- Pyramid sizes ---------------------------------------------------------------------------


def image_size(path):
    """Read (height, width) from the header of a PNG or JPEG file. Raise ValueError when the
    file is empty, is neither PNG nor JPEG, or has a truncated or corrupt header."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"{path}: the file is empty; check the file or pass a PNG or JPEG")
    size = None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        # The IHDR chunk comes first: a 4-byte length, then the type, width, height and five
        # 1-byte fields, which the chunk's CRC covers.
        ihdr = data[12:29]
        crc = data[29:33]
        intact = len(crc) == 4 and struct.unpack(">I", crc)[0] == zlib.crc32(ihdr)
        if ihdr[:4] != b"IHDR" or not intact:
            raise ValueError(
                f"{path}: not a readable PNG, because its IHDR header is truncated or corrupt; "
                "check the file or export it again"
            )
        width, height = struct.unpack(">II", ihdr[4:12])
        size = height, width
    if data[:2] == b"\xff\xd8":
        position = 2
        while position + 4 <= len(data):
            if data[position] != 0xFF:
                break
            marker = data[position + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                position += 2
                continue
            (length,) = struct.unpack(">H", data[position + 2 : position + 4])
            # Start-of-frame markers: C0 to CF except C4 (Huffman), C8 (reserved), CC (arithmetic).
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if position + 9 <= len(data):
                    size = struct.unpack(">HH", data[position + 5 : position + 9])
                break
            position += 2 + length
        if size is None:
            raise ValueError(
                f"{path}: not a readable JPEG, because it is truncated or corrupt before the "
                "image size (start-of-frame marker); check the file or export it again"
            )
    if size is None:
        raise ValueError(
            f"{path}: not a PNG or JPEG file (no PNG or JPEG signature); check the file or "
            "convert it to PNG or JPEG"
        )
    if 0 in size:
        raise ValueError(
            f"{path}: the header gives an empty image of {size[0]}x{size[1]} pixels; check the "
            "file or export it again"
        )
    return size


def log_base(x, base):
    return math.log(x) / math.log(base)


def integer_factor(scale):
    """Return s when 1 / scale is an exact integer (the resize's integer path), else None."""
    inverse = 1.0 / scale
    if math.isfinite(inverse) and inverse >= 1.0 and inverse == math.floor(inverse):
        return int(inverse)
    return None


def resized_size(height, width, scale):
    """Output size of the scale-mode resize: floor division on the integer path, else ceil."""
    factor = integer_factor(scale)
    if factor is not None:
        return height // factor, width // factor
    return math.ceil(height * scale), math.ceil(width * scale)


def pyramid_sizes(height, width):
    """Compute the (height, width) of every scale, coarsest first, with the Rust trainer's rule
    (src/singan/pyramid.rs): the number of scales follows from min_size and
    scale_factor_init, and each scale is resized directly from the image scaled to max_size."""
    short_side, long_side = min(height, width), max(height, width)

    num_scales = math.ceil(log_base(MIN_SIZE / short_side, SCALE_FACTOR_INIT)) + 1
    stop_scale = num_scales - math.ceil(
        log_base(min(MAX_SIZE, long_side) / long_side, SCALE_FACTOR_INIT)
    )
    if stop_scale < 1:
        raise ValueError(
            f"image {height}x{width} gives fewer than two scales; {pyramid_advice(height, width)}"
        )

    scale_one = min(MAX_SIZE / long_side, 1.0)
    top_height, top_width = resized_size(height, width, scale_one)
    if min(top_height, top_width) < MIN_SIZE:
        raise ValueError(
            f"image {height}x{width} resized to {top_height}x{top_width} is below "
            f"min_size {MIN_SIZE}; {pyramid_advice(height, width)}"
        )

    factor = (MIN_SIZE / min(top_height, top_width)) ** (1.0 / stop_scale)
    sizes = [
        resized_size(top_height, top_width, factor ** (stop_scale - k))
        for k in range(stop_scale + 1)
    ]
    min_side = 2 * NUM_BLOCKS * (KERNEL_SIZE // 2) + 1
    for k, (h, w) in enumerate(sizes):
        if min(h, w) < min_side:
            raise ValueError(
                f"scale {k} is {h}x{w}, below the minimum side {min_side}; use a larger image"
            )
    return sizes


def pyramid_advice(height, width):
    """Return what to change about an image whose pyramid is rejected. After the resize to
    max_size the shorter side must still be at least min_size, so a larger image helps only
    when the longer side is at most about max_size / min_size times the shorter side."""
    short_side, long_side = min(height, width), max(height, width)
    max_ratio = MAX_SIZE / MIN_SIZE
    too_small = short_side < MIN_SIZE
    too_elongated = long_side > max_ratio * short_side
    if too_small and too_elongated:
        return (
            f"use a larger and less elongated image, with a shorter side of at least {MIN_SIZE} "
            f"pixels and a longer side at most about {max_ratio:g} times the shorter"
        )
    if too_elongated:
        return (
            f"use a less elongated image, with a longer side at most about {max_ratio:g} times "
            "the shorter"
        )
    if too_small:
        return f"use a larger image, with a shorter side of at least {MIN_SIZE} pixels"
    return "use a larger or less elongated image"


def parse_sizes(text):
    sizes = []
    for item in text.split(","):
        try:
            h, w = item.lower().split("x")
            sizes.append((int(h), int(w)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid size {item!r}; expected HEIGHTxWIDTH, such as 26x34"
            ) from None
        if min(sizes[-1]) < min_scale_side():
            raise argparse.ArgumentTypeError(
                f"invalid size {item!r}; both sides must be at least {min_scale_side()} pixels, "
                f"because the critic's {NUM_BLOCKS} unpadded convolutions trim {border()} pixels "
                "from each side"
            )
    return sizes


# --- Networks --------------------------------------------------------------------------------


def features_at(scale):
    """Feature counts (max, min) at a scale: min(features * 2^floor(scale / 4), 128)."""
    widen = 2 ** (scale // 4)
    return min(MAX_FEATURES * widen, 128), min(MIN_FEATURES * widen, 128)


def block_channels(max_features, min_features):
    """Return the (c_in, c_out) pair of each block and the last convolution's input count."""
    blocks = [(3, max_features)]
    last = max_features
    for i in range(1, NUM_BLOCKS - 1):
        f = max_features >> i
        blocks.append((max(min_features, 2 * f), max(min_features, f)))
        last = max(min_features, f)
    return blocks, last


def border():
    """Pixels each network trims from each side of its input."""
    return NUM_BLOCKS * (KERNEL_SIZE - 1 - 2 * PADDING) // 2


def min_scale_side():
    """Return the smallest height or width a scale may have (11 by default). The critic trims
    border() pixels from each side and must keep at least one output pixel."""
    return 2 * border() + 1


def conv_block(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, KERNEL_SIZE, padding=PADDING, bias=True),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(LEAKY_SLOPE),
    )


def initialise(module):
    """Draw conv weights from N(0, 0.02^2) with zero biases, and batch norm weights from
    N(1, 0.02^2) with zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


class Generator(nn.Module):
    """G(z, prev) = prev + tanh(net(zero_pad(z))), with the output the size of prev."""

    def __init__(self, scale):
        super().__init__()
        blocks, last = block_channels(*features_at(scale))
        self.features = nn.Sequential(*[conv_block(c_in, c_out) for c_in, c_out in blocks])
        self.features_to_image = nn.Conv2d(last, 3, KERNEL_SIZE, padding=PADDING)
        self.input_padding = border()
        initialise(self)

    def forward(self, z, prev):
        h = F.pad(z, [self.input_padding] * 4)
        return prev + torch.tanh(self.features_to_image(self.features(h)))


class Discriminator(nn.Module):
    """The patch critic: (N, 3, H, W) to a score map (N, 1, H - 10, W - 10)."""

    def __init__(self, scale):
        super().__init__()
        blocks, last = block_channels(*features_at(scale))
        self.features = nn.Sequential(*[conv_block(c_in, c_out) for c_in, c_out in blocks])
        self.classifier = nn.Conv2d(last, 1, KERNEL_SIZE, padding=PADDING)
        initialise(self)

    def forward(self, x):
        return self.classifier(self.features(x))


# --- One iteration ---------------------------------------------------------------------------


def gradient_penalty(critic, real, fake):
    """Compute the WGAN-GP penalty: the mean over (n, h, w) of (||g[n, :, h, w]||_2 - 1)^2,
    where g is the gradient of the summed critic scores at a random interpolation between real
    and fake, one interpolation weight per sample."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
    score = critic(mixed).sum()
    (input_grad,) = torch.autograd.grad(score, mixed, create_graph=True)
    return ((torch.linalg.vector_norm(input_grad, dim=1) - 1.0) ** 2).mean()


def apply_gradients(optimizer, params, loss):
    """Take the gradients of loss with respect to params only, then step the optimiser."""
    grads = torch.autograd.grad(loss, params)
    for param, grad in zip(params, grads):
        param.grad = grad
    optimizer.step()


def iteration(generator, critic, generator_optimizer, critic_optimizer, inputs):
    """Run one critic step then one generator step; return the logged loss values."""
    real, prev_random, noise, prev_reconstruction, fixed_noise = inputs

    # Critic step. fake keeps its graph for the generator step.
    fake = generator(prev_random + NOISE_AMPLITUDE * noise, prev_random)
    fake_detached = fake.detach()
    real_term = -critic(real).mean()
    fake_term = critic(fake_detached).mean()
    penalty = gradient_penalty(critic, real, fake_detached)
    critic_loss = real_term + fake_term + PENALTY_WEIGHT * penalty
    apply_gradients(critic_optimizer, list(critic.parameters()), critic_loss)

    # Generator step. The critic has its updated weights and receives no gradient.
    reconstruction = generator(
        prev_reconstruction + NOISE_AMPLITUDE * fixed_noise, prev_reconstruction
    )
    mse = F.mse_loss(reconstruction, real)
    adversarial = -critic(fake).mean()
    generator_loss = RECONSTRUCTION_WEIGHT * mse + ADVERSARIAL_WEIGHT * adversarial
    apply_gradients(generator_optimizer, list(generator.parameters()), generator_loss)

    # The Rust step reads its losses back for logging, so this one does too.
    return [
        t.item()
        for t in (critic_loss, real_term, fake_term, penalty, generator_loss, mse, adversarial)
    ]


def draw_noise(scale, size, device):
    """Standard normal noise of shape (1, 3, H, W); at scale 0 one plane repeated over RGB."""
    h, w = size
    if scale == 0:
        return torch.randn(1, 1, h, w, device=device).expand(1, 3, h, w).contiguous()
    return torch.randn(1, 3, h, w, device=device)


# --- FLOP count ------------------------------------------------------------------------------


def iteration_gflop(scale, size):
    """Count the convolution FLOPs of one iteration, ported from `iteration_gflop` in
    src/singan/bench.rs.

    Each convolution costs 2 * C_out * C_in * K^2 * H_out * W_out. A backward pass adds an input
    gradient per layer, except the first layer when its input is a constant, and a weight
    gradient per layer where the parameters are differentiated.
    """
    blocks, last = block_channels(*features_at(scale))
    k2 = KERNEL_SIZE * KERNEL_SIZE
    shrink = KERNEL_SIZE - 1 - 2 * PADDING

    def conv_flops(input_size, out_channels):
        h, w = input_size
        flops = []
        for c_in, c_out in blocks + [(last, out_channels)]:
            h -= shrink
            w -= shrink
            flops.append(2.0 * c_in * c_out * k2 * h * w)
        return flops

    h, w = size
    b = border()
    generator = conv_flops((h + 2 * b, w + 2 * b), 3)
    critic = conv_flops((h, w), 1)
    forward_g = sum(generator)
    forward_d = sum(critic)
    critic_first_input_free = forward_d - critic[0]
    generator_first_input_free = forward_g - generator[0]
    # Critic step: one G forward, then D forward on real and on fake, each followed by weight
    # gradients and by input gradients for all but the first layer. The penalty adds a D
    # forward, its input gradient and its double backward, counted as two backward passes.
    # NOTE: that count is an estimate and slightly high (about 1% of the total at 32 channels
    # and 25x34), because the first layer's input gradient and the last layer's gradients along
    # the forward path do not feed the penalty's gradient.
    critic_step = (
        forward_g
        + 2.0 * forward_d
        + 2.0 * (forward_d + critic_first_input_free)
        + forward_d
        + forward_d
        + 2.0 * (forward_d + forward_d)
    )
    # Generator step: one G forward for the reconstruction, then D forward on fake with input
    # gradients only. Two backward passes run through G (reconstruction and fake), each with
    # weight gradients and input gradients for all but the first layer.
    generator_step = (
        forward_g + forward_d + forward_d + 2.0 * (forward_g + generator_first_input_free)
    )
    return (critic_step + generator_step) / 1e9


# --- Timing ----------------------------------------------------------------------------------


def time_scale(scale, size, steps, device):
    """Time `steps` iterations at one scale after one warm-up; return (median ms, min ms, width)."""
    generator = Generator(scale).to(device)
    critic = Discriminator(scale).to(device)
    generator_optimizer = torch.optim.Adam(
        generator.parameters(), lr=LEARNING_RATE, betas=ADAM_BETAS
    )
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=LEARNING_RATE, betas=ADAM_BETAS)
    samples = []
    for step in range(steps + 1):
        inputs = (
            draw_noise(1, size, device),
            draw_noise(1, size, device),
            draw_noise(scale, size, device),
            draw_noise(1, size, device),
            draw_noise(scale, size, device),
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        iteration(generator, critic, generator_optimizer, critic_optimizer, inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step > 0:
            samples.append((time.perf_counter() - started) * 1e3)
    samples.sort()
    width = generator.features[0][0].out_channels
    return samples[len(samples) // 2], samples[0], width


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Time one SinGAN training iteration per scale in PyTorch."
    )
    parser.add_argument(
        "image",
        nargs="?",
        help="PNG or JPEG whose size gives the pyramid (default: the 96x128 built-in sample)",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help="pyramid sizes, coarsest first, as HEIGHTxWIDTH,... with both sides at least "
        f"{min_scale_side()} pixels (default: the pyramid of IMAGE; overrides IMAGE)",
    )
    parser.add_argument(
        "--scales",
        type=parse_scales,
        help="scales to time, as a comma-separated list such as 0,1,9 (default: all)",
    )
    parser.add_argument(
        "--steps", type=positive_int, default=5, help="timed iterations per scale (default: %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads, passed to torch.set_num_threads (default: torch's own default)",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="torch device (default: cpu)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of torch's random generator (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "--device cuda: torch reports no usable CUDA device (a CUDA build of torch reports "
            "none on a machine without an NVIDIA GPU and driver); use --device cpu"
        )
    torch.manual_seed(args.seed)

    try:
        if args.sizes is not None:
            sizes = args.sizes
        elif args.image is not None:
            sizes = pyramid_sizes(*image_size(args.image))
        else:
            sizes = pyramid_sizes(*SAMPLE_IMAGE_SIZE)
    except OSError as error:
        sys.exit(f"cannot read IMAGE {args.image}: {error.strerror}; check the path")
    except ValueError as error:
        sys.exit(f"cannot compute the pyramid: {error}")
    # Each scale is timed once, in increasing order, as `singan bench iteration` does.
    scales = sorted(set(args.scales)) if args.scales is not None else list(range(len(sizes)))
    for k in scales:
        if not 0 <= k < len(sizes):
            sys.exit(
                f"--scales: scale {k} does not exist; this pyramid has scales 0 to "
                f"{len(sizes) - 1}"
            )

    print(f"torch: {torch.__version__}, device: {device}, threads: {torch.get_num_threads()}")
    print(
        f"{'scale':<6} {'size':>9} {'width':>6} {'median ms':>10} {'min ms':>10} "
        f"{'GFLOP':>8} {'GFLOP/s':>8}",
        flush=True,
    )
    for k in scales:
        median_ms, min_ms, width = time_scale(k, sizes[k], args.steps, device)
        gflop = iteration_gflop(k, sizes[k])
        size_text = f"{sizes[k][0]}x{sizes[k][1]}"
        print(
            f"{k:<6} {size_text:>9} {width:>6} {median_ms:>10.1f} {min_ms:>10.1f} "
            f"{gflop:>8.2f} {gflop / (median_ms / 1e3):>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        exit_interrupted()
