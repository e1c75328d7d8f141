"""Which kernel runs the linear layers: a named piece, applied by module swap, chosen by measurement.

``modeling.py`` calls its layers as the reference does (``self.q_proj(x)``); what runs behind the call is decided
here, per model, with ``use(model, kernel)``:

* ``"aten"``: plain ``nn.Linear`` (``F.linear``: MKL's sgemm on CPU, cuBLAS on GPU), the reference's kernel.
* ``"onednn"``: every linear layer becomes a ``OneDNNLinear`` (an ``nn.Linear`` subclass with the same parameters)
  whose CPU products run on oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``). In inference the bias, and
  for ``fc1`` the layer's activation, are fused into the product; under autograd ``OneDNNProduct`` runs the
  forward and both backward products on oneDNN.
* ``"auto"`` (what every model gets when it is built): ``OneDNNLinear`` layers that, the first time they meet a
  shape class (inference or autograd, dtype, rows rounded up to a power of two, in, out, bias, activation,
  intra-op threads), time both kernels on that very input and keep the faster one for the rest of the process (as
  ``torch.backends.cudnn.benchmark`` does). ``choices()`` lists the decisions with their timings; the logger
  ``bart_torch.kernels`` reports each one at INFO level.

Why measure: on an AMD EPYC (AVX-512) MKL's sgemm runs its AVX2 code and oneDNN is about 2x faster at most sizes;
on an Intel Xeon MKL uses AVX-512 too and wins at one row and in training (bench/RESULTS.md). The processor's name
does not say which; a measurement does. Tensors on other devices or of other dtypes, autocast and tracing always
take ``F.linear``, unmeasured. Both kernels agree to float32 rounding (tests/test_torch_kernels.py).

``threads_for_load()`` (around every ``generate``) runs decoding on fewer intra-op threads while other processes
hold the cores; see its docstring for why and what it changes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

KERNELS = ("auto", "onednn", "aten")
# a linear layer whose output the same parent passes through an activation: (linear name, activation name)
FUSED = {"fc1": "activation_fn"}
# activation module -> oneDNN post-op (name, algorithm) fused into the product's epilogue
_POST_OPS = {(nn.GELU, "none"): ("gelu", "none"), (nn.GELU, "tanh"): ("gelu", "tanh"), (nn.ReLU, None): ("relu", ""),
             (nn.SiLU, None): ("swish", ""), (nn.Tanh, None): ("tanh", "")}
# shape class -> (kernel, oneDNN seconds, aten seconds); see choices()
_CHOICES: dict = {}


@functools.cache
def onednn_available() -> bool:
    """True when this torch build has oneDNN and its fused linear op."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def _is_tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def _post_op(activation: Optional[nn.Module]) -> tuple:
    if activation is None:
        return "none", ""
    return _POST_OPS[(type(activation), getattr(activation, "approximate", None))]


def onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   post_op: str = "none", algorithm: str = "") -> torch.Tensor:
    """``post_op(x @ weight.T + bias)`` on oneDNN; x (..., in), weight (out, in) (strided views are fine)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, post_op, [], algorithm)


class OneDNNProduct(torch.autograd.Function):
    """``x @ weight.T + bias`` under autograd: the forward and both backward products on oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # x (..., in), weight (out, in), bias (out,) or None -> (..., out)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_product(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # grad (..., out)
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])  # (N, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_product(g, weight.t(), None).view(x.shape)  # (N, out) @ (out, in) -> (..., in)
        if ctx.needs_input_grad[1]:
            grad_w = onednn_product(g.t(), x.reshape(-1, x.shape[-1]).t(), None)  # (out, N) @ (N, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)  # (out,)
        return grad_x, grad_w, grad_b


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose CPU products may run on oneDNN, optionally followed
    by an activation (``fc1``'s, fused into the product in inference). ``kernel`` is ``"onednn"`` (always, where
    eligible) or ``"auto"`` (by measurement, per shape class)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None,
                 activation: Optional[nn.Module] = None, kernel: str = "auto"):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.activation = activation
        self.kernel = kernel

    def _route(self, x: torch.Tensor, grad: bool) -> str:
        w = self.weight
        if not (onednn_available() and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
                and w.dtype == x.dtype and not torch.is_autocast_enabled("cpu") and not _is_tracing()):
            return "aten"
        if self.kernel == "onednn":
            return "onednn"
        rows = x.numel() // x.shape[-1]
        key = ("autograd" if grad else "inference", str(x.dtype).removeprefix("torch."),
               1 << (min(rows, 1024) - 1).bit_length(), self.in_features, self.out_features,
               self.bias is not None, _post_op(self.activation)[0], torch.get_num_threads())  # rows: power of 2
        if key not in _CHOICES:
            _CHOICES[key] = _measure(self, x, grad)
            logger.info("linear %s: oneDNN %.0f us, aten %.0f us -> %s", key, _CHOICES[key][1] * 1e6,
                        _CHOICES[key][2] * 1e6, _CHOICES[key][0])
        return _CHOICES[key][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        w, b = self.weight, self.bias
        grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad))
        if self._route(x, grad) == "aten":
            out = F.linear(x, w, b)
        elif grad:
            out = OneDNNProduct.apply(x, w, b)
        else:
            return onednn_product(x, w, b, *_post_op(self.activation))
        return out if self.activation is None else self.activation(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.kernel}"


def _measure(layer: OneDNNLinear, x: torch.Tensor, grad: bool, repeats: int = 3) -> tuple:
    """(kernel, oneDNN seconds, aten seconds): best of ``repeats`` alternating runs of the layer's product on ``x``
    (with the backward products when ``grad``), after one untimed run each. oneDNN must win by 5%."""
    act = layer.activation or nn.Identity()
    post = _post_op(layer.activation)
    w, b = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
    x = x.detach()

    def run(onednn: bool) -> None:
        if not grad:
            with torch.no_grad():
                onednn_product(x, w, b, *post) if onednn else act(F.linear(x, w, b))
            return
        with torch.enable_grad():
            xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
            out = act(OneDNNProduct.apply(xs, ws, b) if onednn else F.linear(xs, ws, b))
            out.backward(torch.ones_like(out))

    best = {True: math.inf, False: math.inf}
    for onednn in (True, False):
        run(onednn)
    for _ in range(repeats):
        for onednn in (True, False):
            t0 = time.perf_counter()
            run(onednn)
            best[onednn] = min(best[onednn], time.perf_counter() - t0)
    return ("onednn" if best[True] < 0.95 * best[False] else "aten"), best[True], best[False]


def choices() -> dict:
    """The decisions of ``"auto"`` so far: ``{(mode, dtype, rows class, in, out, bias, post-op, threads): (kernel,
    oneDNN seconds, aten seconds)}``."""
    return dict(_CHOICES)


def forget_choices() -> None:
    """Measure again at the next call of every shape class (e.g. after ``torch.set_num_threads``)."""
    _CHOICES.clear()


def _swap(linear: nn.Linear, cls: type, **kwargs) -> nn.Linear:
    """A ``cls`` holding the very same parameters (tied weights stay tied); nothing is allocated."""
    new = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta", **kwargs)
    new.weight, new.bias = linear.weight, linear.bias
    return new.train(linear.training)


def use(model: nn.Module, kernel: str = "auto") -> nn.Module:
    """Run ``model``'s linear layers on ``kernel`` (``KERNELS``, see the module docstring), in place, by module
    swap; returns ``model``. ``"aten"`` gives back plain ``nn.Linear`` layers. Other module types (quantized
    layers, ...) are left alone."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) not in (nn.Linear, OneDNNLinear):
                continue
            act_name = FUSED.get(name)
            if isinstance(child, OneDNNLinear) and child.activation is not None:  # un-fuse
                setattr(parent, act_name, child.activation)
            if kernel == "aten":
                setattr(parent, name, _swap(child, nn.Linear))
                continue
            activation = getattr(parent, act_name, None) if act_name else None
            if activation is not None and (type(activation), getattr(activation, "approximate", None)) in _POST_OPS:
                setattr(parent, act_name, nn.Identity())
            else:
                activation = None
            setattr(parent, name, _swap(child, OneDNNLinear, activation=activation, kernel=kernel))
    return model


def _others_running() -> Optional[int]:
    """Runnable threads of other processes now (Linux): ``/proc/loadavg``'s running count minus this process's
    running threads, the least of five samples 0.2 ms apart (a passing kernel thread is not a competitor)."""
    least = None
    try:
        for _ in range(5):
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
            ours = 0
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/stat") as f:
                    ours += f.read().rsplit(")", 1)[1].split()[0] == "R"
            least = running - ours if least is None else min(least, running - ours)
            time.sleep(2e-4)
    except (OSError, ValueError, IndexError):
        return None
    return max(0, least)


@contextlib.contextmanager
def threads_for_load(enabled: bool = True):
    """Run the block with fewer intra-op threads while other processes already hold the cores; a no-op otherwise
    (``enabled=False``, one thread, nothing else running, or no ``/proc``).

    Why: the products are many and short in decoding (a few hundred OpenMP regions per step), and torch's OpenMP
    (libgomp) workers spin-wait between regions. When other processes compete for the cores, each region waits
    for a worker that the scheduler has parked behind them: a 2-thread decoding step measured up to 10x slower
    than a 1-thread one (bench/RESULTS.md). ``OMP_WAIT_POLICY=passive`` cures it too, but libgomp reads it once,
    when torch is loaded, so it is the user's choice, not ours. Here the count of threads set by
    ``torch.set_num_threads`` is lowered to the cores left free (at least one) for the block and restored after
    it, also on error; it is process-wide for that time (other Python threads running torch then see it too)."""
    threads = torch.get_num_threads()
    others = _others_running() if enabled and threads > 1 else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if others is None or others + threads <= cores:
        yield threads
        return
    fewer = max(1, cores - others)
    logger.info("%d other runnable threads on %d cores: %d intra-op threads instead of %d", others, cores, fewer,
                threads)
    torch.set_num_threads(fewer)
    try:
        yield fewer
    finally:
        torch.set_num_threads(threads)


def kernel_of(model: nn.Module) -> str:
    """The kernel ``use`` gave ``model``'s linear layers (``"aten"`` when none was swapped in)."""
    kinds = {m.kernel for m in model.modules() if isinstance(m, OneDNNLinear)}
    return kinds.pop() if len(kinds) == 1 else ("aten" if not kinds else "mixed")
