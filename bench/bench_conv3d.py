"""``loglik bench conv3d``: loglik.conv3d against torch.nn.functional.conv3d (CPU, float32), same run.

Cases (the issue's shapes, 'same' padding):
  * (8, 1, 16, 16, 512) -> 16 channels, 3x3x7 kernel (first layer of a spectral CNN);
  * (1, 16, 32, 32, 256) -> 32 channels, 3x3x3 kernel.
Modes: forward; forward+backward with input and weight gradients ("fwd+bwd"); forward+backward with the weight
gradient only ("fwd+bwd_w": the first layer of a network, where the data need no gradient). GFLOP/s counts
2 * outputs * C * KX * KY * KE per pass (3 passes for fwd+bwd, 2 for fwd+bwd_w). Both libraries use the same
thread count (torch.set_num_threads = loglik.get_num_threads()).
"""

from __future__ import annotations

from ._harness import Row, timed_row

CASES = [
    ("8x1x16x16x512->16 k3x3x7", (8, 1, 16, 16, 512), 16, (3, 3, 7)),
    ("1x16x32x32x256->32 k3x3x3", (1, 16, 32, 32, 256), 32, (3, 3, 3)),
]
QUICK_CASES = [
    ("2x1x8x8x256->16 k3x3x7", (2, 1, 8, 8, 256), 16, (3, 3, 7)),
    ("1x16x8x8x128->32 k3x3x3", (1, 16, 8, 8, 128), 32, (3, 3, 3)),
]


def run(quick: bool = False) -> list[Row]:
    import torch
    import torch.nn.functional as F

    import loglik

    torch.set_num_threads(loglik.get_num_threads())
    rows: list[Row] = []
    repeat = 3 if quick else 7
    for name, xs, cout, k in QUICK_CASES if quick else CASES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(*xs, generator=g)
        w = torch.randn(cout, xs[1], *k, generator=g) / (xs[1] * k[0] * k[1] * k[2]) ** 0.5
        b = torch.randn(cout, generator=g)
        pad = tuple(v // 2 for v in k)
        y_ref = F.conv3d(x.double(), w.double(), b.double(), padding=pad)
        flops = 2.0 * y_ref.numel() * xs[1] * k[0] * k[1] * k[2]
        gy = torch.randn(y_ref.shape, generator=g)
        impls = {
            "loglik": lambda x_, w_, b_, pad=pad: loglik.conv3d(x_, w_, b_, 1, pad, 1, check_finite=False),
            "torch": lambda x_, w_, b_, pad=pad: F.conv3d(x_, w_, b_, padding=pad),
        }
        for mode, passes in (("fwd", 1), ("fwd+bwd", 3), ("fwd+bwd_w", 2)):
            for impl, fn in impls.items():
                xr = x.clone().requires_grad_(mode == "fwd+bwd")
                wr = w.clone().requires_grad_(mode != "fwd")
                br = b.clone().requires_grad_(mode != "fwd")

                def step(fn=fn, xr=xr, wr=wr, br=br, mode=mode, gy=gy):
                    if mode == "fwd":
                        with torch.no_grad():
                            return fn(xr, wr, br)
                    xr.grad = wr.grad = br.grad = None
                    y = fn(xr, wr, br)
                    y.backward(gy)
                    return y

                row, y = timed_row("conv3d", f"{name} {mode}", impl, step, repeat=repeat, warmup=2)
                err = float((y.detach().double() - y_ref).abs().max())
                row.metrics["GFLOP/s"] = passes * flops / row.seconds / 1e9 if row.seconds else None
                row.metrics["max_abs_err"] = err
                if mode != "fwd":
                    wref = w.double().requires_grad_()
                    F.conv3d(x.double(), wref, b.double(), padding=pad).backward(gy.double())
                    row.metrics["grad_w_rel_err"] = float(
                        (wr.grad.double() - wref.grad).abs().max() / wref.grad.abs().max()
                    )
                rows.append(row)
    return rows
