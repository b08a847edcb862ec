"""Shape arithmetic and the max-pool shared by the lecture's nets."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_pool_size(size: int, kernel: int = 5, pool: int = 2) -> int:
    """Spatial size after an unpadded ``kernel`` conv followed by a ``pool`` max-pool.

    28 -> (28 - 5 + 1) // 2 = 12 -> (12 - 5 + 1) // 2 = 4 for the lecture's two stages.
    """
    out = (size - kernel + 1) // pool
    if out < 1:
        raise ValueError(f"image size {size} is too small for a {kernel}x{kernel} conv and {pool}x{pool} pool")
    return out


def pooled_side(image_size: int, stages: int, kernel: int = 5, pool: int = 2) -> int:
    """The spatial size after ``stages`` of :func:`conv_pool_size`; an ``image_size`` too small for them is one
    line naming it and the smallest that works (the size inside the stages, "image size 1", meant nothing)."""
    smallest = 1
    for _ in range(stages):
        smallest = smallest * pool + kernel - 1  # 1 -> 6 -> 16 for the lecture's 5x5 conv and 2x2 pool
    if image_size < smallest:
        raise ValueError(f"image_size {image_size} is too small: the smallest that works is {smallest} ({stages} "
                         f"stage{'s' * (stages > 1)} of a {kernel}x{kernel} conv and a {pool}x{pool} pool)")
    side = image_size
    for _ in range(stages):
        side = conv_pool_size(side, kernel, pool)
    return side


#: Below this many input elements PyTorch's own max-pool is the quicker (its fixed cost is one op, not three).
QUICK_POOL_MIN_ELEMENTS = 1 << 17


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (same arguments, same outputs, same gradients), quicker where no gradient is wanted.

    On the CPU, PyTorch's max-pool finds every window's argmax even under ``torch.inference_mode()``, where
    nothing uses it. Without autograd, a 2x2 pool with stride 2 is the elementwise maximum of the four strided
    views of its windows' corners: the same values (a maximum is exact, NaN wins in both; only where a window's
    largest values are a +0.0 and a -0.0 may the zero's sign differ: equal values,
    and equal sums after), 7% quicker for the residual net's test pass in channels-last and 1.5x in NCHW
    (docs/speed.md; the logits of the shipped nets over the MNIST and Fashion-MNIST test sets are the same to the bit).
    Training, tracing and scripting for export, ``torch.compile``, other devices and small inputs (where
    PyTorch's one op beats three) take ``nn.MaxPool2d``'s own path. No parameter or buffer: state dicts
    and hooks are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and self._quick(x):
            return max_of_2x2_corners(x)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    @torch.jit.unused
    def _quick(self, x: torch.Tensor) -> bool:
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or (torch.is_grad_enabled() and x.requires_grad):
            return False
        shape_ok = all(v in (2, (2, 2)) for v in (self.kernel_size, self.stride)) and \
            self.padding in (0, (0, 0)) and self.dilation in (1, (1, 1))
        return (shape_ok and not self.ceil_mode and not self.return_indices and x.dim() == 4
                and x.device.type == "cpu" and x.is_floating_point() and x.numel() >= QUICK_POOL_MIN_ELEMENTS)


def max_of_2x2_corners(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` without autograd: the maximum of each 2x2 window (an odd last row or column dropped)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    out = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
    torch.maximum(out, x[..., 1::2, 0::2], out=out)  # in place: one buffer, not two
    return torch.maximum(out, x[..., 1::2, 1::2], out=out)
