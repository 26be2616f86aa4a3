"""Plain PyTorch baselines for the throughput benchmarks (benchmark-only; needs `pip install torch==2.13.0`).

Written from the descriptions in Cohen et al. (ICML 2019, App. B; reference code `archs/cifar_resnet.py`
and `core.py::_sample_noise`) and Salman et al. (NeurIPS 2019, Pseudocode 1; reference `train_pgd.py`),
to measure what a direct PyTorch user would get on the same machine. Not part of the library.

Layout: images are float32 [batch, channels, height, width] pixels in [0, 1] (torch's NCHW); the
benchmarks optionally convert model and inputs to `torch.channels_last` memory format.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class Normalize(nn.Module):
    """Per-channel (x - mean) / std as the first layer, so noise lives in pixel space."""

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, identity or 1x1-conv + BN projection shortcut (He et al. 2016).

    `tf_padding=True` pads a stride-2 3x3 conv like TensorFlow's "same" (0 before, 1 after) instead
    of torch's symmetric padding=1; it exists only to check the architecture against Keras number
    for number (`load_keras_weights`), the benchmarks use torch's own padding.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, bn_eps: float = 1e-5, tf_padding: bool = False):
        super().__init__()
        self.pad_like_tf = tf_padding and stride == 2
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 0 if self.pad_like_tf else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=bn_eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=bn_eps)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes, eps=bn_eps))

    def forward(self, x):
        y = F.pad(x, (0, 1, 0, 1)) if self.pad_like_tf else x
        y = F.relu(self.bn1(self.conv1(y)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6k+2), widths 16/32/64, with normalization first; logits out.

    The same architecture as `tfsmooth.models.cifar_resnet(depth)` (layer for layer).
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, *, bn_eps: float = 1e-5, tf_padding: bool = False):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6k + 2, got {depth}")
        blocks = (depth - 2) // 6
        self.normalize = Normalize()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16, eps=bn_eps)
        layers, in_planes = [], 16
        for stage, planes in enumerate((16, 32, 64)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride, bn_eps, tf_padding))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_keras_weights(torch_model: CifarResNet, keras_model) -> None:
    """Copies the weights of `tfsmooth.models.cifar_resnet(depth)` into `CifarResNet(depth)`.

    Conv kernels go from Keras [kh, kw, in, out] to torch [out, in, kh, kw]; BN gamma, beta, moving
    mean and variance are copied; the dense kernel is transposed. Raises ValueError if a layer is
    missing or a shape differs, which is the point: it proves the two architectures match.
    """
    def conv(module, name):
        kernel = keras_model.get_layer(name).get_weights()[0].transpose(3, 2, 0, 1)
        _copy(module.weight, kernel, name)

    def bn(module, name):
        gamma, beta, mean, var = keras_model.get_layer(name).get_weights()
        for target, value in ((module.weight, gamma), (module.bias, beta), (module.running_mean, mean),
                              (module.running_var, var)):
            _copy(target, value, name)

    conv(torch_model.conv1, "stem_conv")
    bn(torch_model.bn1, "stem_bn")
    blocks = len(torch_model.layers) // 3
    for i, block in enumerate(torch_model.layers):
        prefix = f"stage{i // blocks + 1}_block{i % blocks + 1}"
        conv(block.conv1, f"{prefix}_conv1")
        bn(block.bn1, f"{prefix}_bn1")
        conv(block.conv2, f"{prefix}_conv2")
        bn(block.bn2, f"{prefix}_bn2")
        if len(block.shortcut):
            conv(block.shortcut[0], f"{prefix}_down_conv")
            bn(block.shortcut[1], f"{prefix}_down_bn")
    kernel, bias = keras_model.get_layer("logits").get_weights()
    _copy(torch_model.fc.weight, kernel.T, "logits")
    _copy(torch_model.fc.bias, bias, "logits")


def _copy(target, value, name):
    if tuple(target.shape) != tuple(value.shape):
        raise ValueError(f"layer {name}: torch shape {tuple(target.shape)} != Keras shape {tuple(value.shape)}")
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def sample_noise_counts(model, x, num: int, batch_size: int, sigma: float, num_classes: int = 10,
                        channels_last: bool = False, dtype=None) -> np.ndarray:
    """The sampling loop of Cohen et al.'s `Smooth._sample_noise`: top-1 counts of f(x + delta).

    Args:
        model: torch module in eval mode, pixels [N, C, H, W] in [0, 1] -> logits [N, K].
        x: float32 [C, H, W] in [0, 1].
        num: number of noisy draws.
        batch_size: noisy copies per forward pass.
        sigma: noise standard deviation (l2, [0, 1] pixel scale).
        num_classes: K.
        channels_last: convert each noisy batch to `torch.channels_last` before the forward pass.
        dtype: if given (e.g. torch.bfloat16, for a model cast to it), each noisy batch is cast to it
            after the noise is added in float32.

    Returns:
        int64 [K] counts, summing to `num`.
    """
    counts = torch.zeros(num_classes, dtype=torch.int64)
    with torch.inference_mode():
        remaining = num
        for _ in range(math.ceil(num / batch_size)):
            this_batch = min(batch_size, remaining)
            remaining -= this_batch
            batch = x.unsqueeze(0).repeat(this_batch, 1, 1, 1)
            noisy = batch + torch.randn_like(batch) * sigma
            if dtype is not None:
                noisy = noisy.to(dtype)
            predictions = model(_layout(noisy, channels_last)).argmax(1)
            counts += torch.bincount(predictions, minlength=num_classes)
    return counts.numpy()


def smooth_adv_pgd(model, x, y, noise, epsilon: float, num_steps: int, channels_last: bool = False):
    """SmoothAdv-PGD of Salman et al. (2019, Sec. 3, estimator (6); their `PGD_L2` with m noise vectors).

    delta starts at 0; each of `num_steps` steps moves it by 2 * epsilon / num_steps along the
    per-example l2-normalized gradient of -log((1/m) sum_i softmax(f(x + delta + delta_i))_y) (a zero
    gradient replaced by a random direction), clips x + delta to [0, 1] and projects delta onto the
    epsilon-ball. The model's parameters should not require gradients (the caller freezes them).

    Args:
        model: torch module (eval mode), pixels [N, C, H, W] -> logits [N, K].
        x: float32 [B, C, H, W] in [0, 1].
        y: int64 [B] labels.
        noise: float32 [B, m, C, H, W], the m draws of each example, reused in every step.
        epsilon: l2 radius on the [0, 1] pixel scale.
        num_steps: T.
        channels_last: feed the model channels_last tensors.

    Returns:
        float32 [B, C, H, W] x_adv (detached), ||x_adv - x||_2 <= epsilon, in [0, 1].
    """
    batch, copies = noise.shape[:2]
    step_size = 2.0 * epsilon / num_steps
    delta = torch.zeros_like(x)
    for _ in range(num_steps):
        delta.requires_grad_(True)
        noisy = ((x + delta).unsqueeze(1) + noise).reshape(batch * copies, *x.shape[1:])
        noisy = _layout(noisy, channels_last)
        probs = F.softmax(model(noisy), dim=1).reshape(batch, copies, -1).mean(1)
        loss = F.nll_loss(torch.log(probs.clamp_min(1e-20)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            norms = grad.flatten(1).norm(dim=1)
            zero = norms == 0
            if zero.any():
                grad[zero] = torch.randn_like(grad[zero])
                norms = grad.flatten(1).norm(dim=1)
            delta = delta + step_size * grad / norms.view(-1, 1, 1, 1)
            delta = (x + delta).clamp(0, 1) - x
            delta = delta.renorm(p=2, dim=0, maxnorm=epsilon)
    return (x + delta).detach()


def smooth_adv_train_step(model, optimizer, x, y, *, sigma: float, num_noise_vec: int, epsilon: float,
                          num_steps: int, channels_last: bool = False):
    """One SmoothAdv training step (Salman et al. 2019, Pseudocode 1, multi-noise), as their `train_pgd.py`.

    Draws m noise vectors per example, attacks with the model in eval mode and its parameters
    frozen, then takes one optimizer step on the cross-entropy of the model (train mode) at
    x_adv + delta_i for all m copies.

    Args:
        model: torch module, pixels [N, C, H, W] in [0, 1] -> logits [N, K].
        optimizer: a torch optimizer over the model's parameters.
        x: float32 [B, C, H, W] in [0, 1]; y: int64 [B].
        sigma, num_noise_vec, epsilon, num_steps: as in `tfsmooth.training.SmoothAdvModel`.
        channels_last: feed the model channels_last tensors.

    Returns:
        (loss, accuracy) of the step as Python floats (the reference loop logs both every step).
    """
    noise = torch.randn(x.shape[0], num_noise_vec, *x.shape[1:]) * sigma
    model.eval()
    model.requires_grad_(False)
    x_adv = smooth_adv_pgd(model, x, y, noise, epsilon, num_steps, channels_last)
    model.train()
    model.requires_grad_(True)
    noisy = _layout((x_adv.unsqueeze(1) + noise).reshape(-1, *x.shape[1:]), channels_last)
    targets = y.repeat_interleave(num_noise_vec)
    logits = model(noisy)
    loss = F.cross_entropy(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), (logits.argmax(1) == targets).float().mean().item()


def _layout(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t
