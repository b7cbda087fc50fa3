"""Replay a recorded training trace in PyTorch, in float64 and float32, and print how far each
precision ends from the recorded values, measured as `singan check trace` measures them.

The float64 replay shows that this script follows the recorded computation. The float32
replay shows how far PyTorch's own single precision drifts over the recorded steps, for
comparison with the float32 errors that `singan check trace` prints. The trace layout is that of
the 32-channel coarsest scale: four conv, batch-norm and leaky-ReLU blocks, then a 3x3
convolution, in both networks.

Usage:
    python benches/torch/replay_trace.py TRACE.safetensors [--threads T]
"""

import argparse
import json
import math
import struct
import sys
import warnings

from argument_types import positive_int

# Errors printed per precision, largest first.
SHOWN = 8

LOGS = [
    "critic_loss",
    "d_real",
    "d_fake",
    "gradient_penalty",
    "generator_loss",
    "reconstruction_mse",
    "generator_adversarial",
]


def read_safetensors(torch, path):
    """Return the float64 and int64 tensors of a safetensors file and its metadata."""
    with open(path, "rb") as file:
        raw = file.read()
    if len(raw) < 8:
        sys.exit(f"error: {path}: too short for a safetensors file")
    length = struct.unpack("<Q", raw[:8])[0]
    try:
        header = json.loads(raw[8 : 8 + length])
    except ValueError as error:
        sys.exit(f"error: {path}: the header is not JSON ({error}); pass a .safetensors file")
    if "step0.noise" not in header:
        sys.exit(f"error: {path}: not a training trace (no step0.noise tensor)")
    dtypes = {"F64": torch.float64, "I64": torch.int64}
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in dtypes:
            sys.exit(f"error: {path}: tensor {name} has dtype {entry['dtype']}; F64 or I64 expected")
        start, end = entry["data_offsets"]
        data = bytearray(raw[8 + length + start : 8 + length + end])
        if len(data) != end - start or len(data) != 8 * math.prod(entry["shape"]):
            sys.exit(f"error: {path}: tensor {name} is cut short; the file is incomplete")
        tensors[name] = torch.frombuffer(data, dtype=dtypes[entry["dtype"]]).reshape(entry["shape"])
    return tensors, header.get("__metadata__", {})


def build_networks(torch):
    nn = torch.nn
    functional = torch.nn.functional

    def block(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))

    def features():
        return nn.Sequential(block(3, 32), *[block(32, 32) for _ in range(3)])

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = features()
            self.last = nn.Conv2d(32, 3, 3)

        def forward(self, z, prev):
            return prev + torch.tanh(self.last(self.features(functional.pad(z, [5] * 4))))

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = features()
            self.last = nn.Conv2d(32, 1, 3)

        def forward(self, x):
            return self.last(self.features(x))

    return Generator, Critic


def state_names(network, prefix, last_name):
    """Map the trace's tensor names to the network's parameters and buffers."""
    names = {}
    for index, block in enumerate(network.features):
        conv, norm = block[0], block[1]
        for suffix, tensor in [
            ("conv.weight", conv.weight),
            ("conv.bias", conv.bias),
            ("batch_norm.weight", norm.weight),
            ("batch_norm.bias", norm.bias),
            ("batch_norm.running_mean", norm.running_mean),
            ("batch_norm.running_var", norm.running_var),
        ]:
            names[f"{prefix}features.{index}.{suffix}"] = tensor
    names[f"{prefix}{last_name}.weight"] = network.last.weight
    names[f"{prefix}{last_name}.bias"] = network.last.bias
    return names


def replay(torch, tensors, metadata, dtype):
    """Run every recorded step at `dtype` and return the logged values, the final state and
    the largest distance Adam can move a parameter over the replay."""
    functional = torch.nn.functional
    Generator, Critic = build_networks(torch)
    generator, critic = Generator().to(dtype), Critic().to(dtype)
    generator_names = state_names(generator, "g.", "features_to_image.0")
    critic_names = state_names(critic, "d.", "classifier")
    with torch.no_grad():
        for name, tensor in {**generator_names, **critic_names}.items():
            tensor.copy_(tensors["init." + name])
    lr = float(metadata.get("lr", "5e-4"))
    betas = tuple(json.loads(metadata.get("betas", "[0.5, 0.9]")))
    eps = float(metadata.get("adam_eps", "1e-8"))
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas, eps=eps)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas, eps=eps)

    real, prev, fixed_noise = (tensors[k].to(dtype) for k in ("real", "prev", "fixed_noise"))
    amplitude = tensors["amp"].item()
    steps = sum(1 for name in tensors if name.startswith("step") and name.endswith(".noise"))
    logs = []

    for step in range(steps):
        noise = tensors[f"step{step}.noise"].to(dtype)
        alpha = tensors[f"step{step}.alpha"].to(dtype).reshape(-1, 1, 1, 1)
        fake = generator(prev + amplitude * noise, prev)
        detached = fake.detach()
        real_term = -critic(real).mean()
        fake_term = critic(detached).mean()
        mixed = (alpha * real + (1 - alpha) * detached).requires_grad_(True)
        (input_grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
        penalty = ((torch.linalg.vector_norm(input_grad, dim=1) - 1) ** 2).mean()
        critic_loss = real_term + fake_term + 0.1 * penalty
        step_optimizer(torch, critic_optimizer, critic, critic_loss)

        reconstruction = generator(prev + amplitude * fixed_noise, prev)
        mse = functional.mse_loss(reconstruction, real)
        adversarial = -critic(fake).mean()
        generator_loss = 10 * mse + adversarial
        step_optimizer(torch, generator_optimizer, generator, generator_loss)
        values = (critic_loss, real_term, fake_term, penalty, generator_loss, mse, adversarial)
        logs.append([value.item() for value in values])

    final = {
        **{"final." + k: v.detach().double() for k, v in generator_names.items()},
        **{"final." + k: v.detach().double() for k, v in critic_names.items()},
    }
    return logs, final, steps * lr


def step_optimizer(torch, optimizer, network, loss):
    """Take the gradients of `loss` with respect to the network's parameters and step."""
    parameters = list(network.parameters())
    for parameter, grad in zip(parameters, torch.autograd.grad(loss, parameters)):
        parameter.grad = grad
    optimizer.step()


def report(torch, tensors, logs, final, travel, label):
    """Print the largest errors, relative to each reference tensor's largest value or, for the
    parameters, at least `travel` (how far Adam can move a parameter over the replay)."""
    errors = []
    recorded = torch.tensor(logs, dtype=torch.float64)
    for index, name in enumerate(LOGS):
        reference = tensors["log." + name]
        error = (recorded[:, index] - reference).abs().max() / reference.abs().max()
        errors.append((error.item(), "log." + name))
    for name, ours in final.items():
        # `singan check trace` measures running means on another scale and skips the biases
        # before batch norm, so neither is compared here.
        if "running_mean" in name or "conv.bias" in name or name not in tensors:
            continue
        reference = tensors[name]
        scale = max(reference.abs().max().item(), travel)
        errors.append((((ours - reference).abs().max() / scale).item(), name))
    errors.sort(reverse=True)
    worst_log = max((entry for entry in errors if entry[1].startswith("log.")), default=None)
    print(f"{label}: largest relative errors")
    for error, name in errors[:SHOWN]:
        print(f"  {error:10.3e}  {name}")
    if worst_log is not None:
        print(f"  largest on a logged loss: {worst_log[0]:.3e} ({worst_log[1]})")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="a training trace (.safetensors)")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads (default 2)")
    args = parser.parse_args(argv)
    # PyTorch warns at import when NumPy is missing, which this script does not need.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        import torch
    except ImportError:
        sys.exit("error: PyTorch is not installed; run `pip install torch`")
    torch.set_num_threads(args.threads)
    try:
        tensors, metadata = read_safetensors(torch, args.trace)
    except OSError as error:
        sys.exit(f"error: {args.trace}: {error.strerror}; pass a training trace (.safetensors)")
    if "step0.noise" not in tensors:
        sys.exit(f"error: {args.trace}: not a training trace (no step0.noise tensor)")
    for dtype, label in [(torch.float64, "float64"), (torch.float32, "float32")]:
        try:
            logs, final, travel = replay(torch, tensors, metadata, dtype)
            report(torch, tensors, logs, final, travel, label)
        except KeyError as error:
            sys.exit(f"error: {args.trace}: tensor {error} is missing")
        except (RuntimeError, ValueError, IndexError, TypeError) as error:
            sys.exit(
                f"error: {args.trace}: invalid trace ({error}); "
                "check its tensor shapes and metadata against `singan check trace`"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
