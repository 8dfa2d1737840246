"""End-to-end check: train a small causal transformer on text that ships with Python, once with torch's loss and once
with loglik's, from the same seed, and compare the loss curves and the peak memory.

Text: the source of a few standard-library modules (``inspect.getsource``), tokenised into words/punctuation with a
vocabulary of the most frequent tokens (``--vocab words``, default; the output head then dominates memory as in a
real language model) or into bytes (``--vocab bytes``, V = 256). Model: token + position embeddings, ``--layers``
pre-norm ``nn.TransformerEncoderLayer`` blocks with a causal mask (no dropout), a final LayerNorm and an untied
output head; AdamW. The only difference between the two runs is the loss:

- ``torch``:  ``F.cross_entropy(F.linear(hidden, head.weight), targets)``
- ``loglik``: ``loglik.linear_cross_entropy(hidden, head.weight, targets)``

Training runs in float64 by default (``--dtype float32`` is available): the two losses are the same mathematics
summed in a different order, and over hundreds of optimizer steps float32 rounding differences grow chaotically
(about 1e-2 relative after 300 steps here) while float64 keeps them far below the 1e-4 tolerance.

Each run is a fresh subprocess whose resident-memory high-water mark is reset once the model and data exist, so
"peak" is the extra memory of training itself. The check passes when every step's loss agrees to ``--rtol``
(default 1e-4, relative) and loglik's peak is lower. Usage::

    python -m loglik.bench.lm_e2e            # 300 steps
    python -m loglik.bench.lm_e2e --quick    # 20 small steps (used by the tests)
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import os
import re
import subprocess
import sys
from typing import Any

from ._harness import proc_status_kb, reset_peak_rss

MODULES = ("textwrap", "string", "json.decoder", "json.encoder", "argparse", "inspect", "dataclasses", "statistics")


def corpus_text() -> str:
    """Source code of a few standard-library modules: real text that ships with every Python."""
    import importlib

    return "\n".join(inspect.getsource(importlib.import_module(m)) for m in MODULES)


def tokenize(text: str, vocab: str, vocab_size: int) -> tuple[list[int], int]:
    """Token ids and the vocabulary size. ``words``: identifiers/numbers/punctuation/whitespace runs, the
    ``vocab_size - 1`` most frequent kept, the rest mapped to one unknown id."""
    if vocab == "bytes":
        return list(text.encode("utf-8")), 256
    toks = re.findall(r"[A-Za-z_]+|\d+|\s+|[^\sA-Za-z_\d]", text)
    common = [w for w, _ in collections.Counter(toks).most_common(vocab_size - 1)]
    index = {w: i + 1 for i, w in enumerate(common)}
    return [index.get(w, 0) for w in toks], len(common) + 1


def train(loss_impl: str, cfg: dict[str, Any], *, measure_memory: bool = False) -> dict[str, Any]:
    """Train and return {"losses": [...], "peak_extra_MB": float | None}."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())
    ids, v = tokenize(corpus_text(), cfg["vocab"], cfg["vocab_size"])
    data = torch.tensor(ids, dtype=torch.int64)
    d, t_len, batch = cfg["d_model"], cfg["seq_len"], cfg["batch"]

    class TinyLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = torch.nn.Embedding(v, d)
            self.pos = torch.nn.Embedding(t_len, d)
            layer = torch.nn.TransformerEncoderLayer(
                d, cfg["heads"], 4 * d, dropout=0.0, batch_first=True, norm_first=True
            )
            self.blocks = torch.nn.TransformerEncoder(layer, cfg["layers"], enable_nested_tensor=False)
            self.norm = torch.nn.LayerNorm(d)
            self.head = torch.nn.Linear(d, v, bias=False)
            self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(t_len))

        def forward(self, x: Any) -> Any:
            pos = torch.arange(x.shape[1])
            hid = self.blocks(self.tok(x) + self.pos(pos), mask=self.mask, is_causal=True)
            return self.norm(hid)

    model = TinyLM().to(getattr(torch, cfg.get("dtype", "float64")))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    starts = torch.randint(0, len(data) - t_len - 1, (cfg["steps"], batch), generator=gen)
    if loss_impl == "loglik":
        import loglik

        def loss_fn(hid: Any, tgt: Any) -> Any:
            return loglik.linear_cross_entropy(hid, model.head.weight, tgt)

    else:

        def loss_fn(hid: Any, tgt: Any) -> Any:
            return F.cross_entropy(F.linear(hid, model.head.weight).reshape(-1, v), tgt.reshape(-1))

    base = None
    if measure_memory and reset_peak_rss():
        base = proc_status_kb("VmRSS")
    losses = []
    for step in range(cfg["steps"]):
        idx = starts[step][:, None] + torch.arange(t_len + 1)
        chunk = data[idx]
        x, y = chunk[:, :-1], chunk[:, 1:]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    peak = None
    if base is not None:
        hwm = proc_status_kb("VmHWM")
        peak = None if hwm is None else (hwm - base) / 1024.0
    return {"losses": losses, "peak_extra_MB": peak, "vocab": v, "tokens": len(ids)}


def config(quick: bool, **over: Any) -> dict[str, Any]:
    cfg = {
        "seed": 0, "vocab": "words", "vocab_size": 8192, "d_model": 128, "heads": 4, "layers": 2, "seq_len": 128,
        "batch": 8, "steps": 300, "lr": 3e-3, "threads": None, "dtype": "float64",
    }  # fmt: skip
    if quick:
        cfg.update(vocab_size=4096, seq_len=64, batch=8, steps=20)
    cfg.update({k: v for k, v in over.items() if v is not None})
    return cfg


def _run_subprocess(loss_impl: str, cfg: dict[str, Any]) -> dict[str, Any]:
    code = (
        "import json, sys; from loglik.bench import lm_e2e as e; "
        f"print('RESULT' + json.dumps(e.train({loss_impl!r}, json.loads(sys.argv[1]), measure_memory=True)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, env=dict(os.environ)
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    raise RuntimeError(f"the {loss_impl} run failed:\n{out.stderr[-2000:]}")


def compare(cfg: dict[str, Any], rtol: float) -> dict[str, Any]:
    """Both runs (fresh subprocesses) and the comparison."""
    ref = _run_subprocess("torch", cfg)
    ours = _run_subprocess("loglik", cfg)
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(ref["losses"], ours["losses"], strict=True)]
    over = [i for i, r in enumerate(rel) if r > rtol]
    result = {
        "first_step_over_rtol": over[0] if over else None,
        "rel_diff_step0": rel[0],
        "config": cfg,
        "vocab": ref["vocab"],
        "tokens": ref["tokens"],
        "loss_first": ref["losses"][0],
        "loss_last_torch": ref["losses"][-1],
        "loss_last_loglik": ours["losses"][-1],
        "max_rel_diff": max(rel),
        "peak_extra_MB_torch": ref["peak_extra_MB"],
        "peak_extra_MB_loglik": ours["peak_extra_MB"],
    }
    mem_ok = (
        ref["peak_extra_MB"] is not None
        and ours["peak_extra_MB"] is not None
        and ours["peak_extra_MB"] < ref["peak_extra_MB"]
    )
    result["curves_agree"] = max(rel) <= rtol
    result["less_memory"] = mem_ok
    result["ok"] = result["curves_agree"] and mem_ok
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20 small steps")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--vocab", choices=("words", "bytes"), default=None)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--dtype", choices=("float64", "float32"), default=None, help="training precision (float64)")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    cfg = config(args.quick, steps=args.steps, vocab=args.vocab, dtype=args.dtype, seq_len=args.seq_len)
    res = compare(cfg, args.rtol)
    print(
        f"vocab={res['vocab']} tokens={res['tokens']} steps={cfg['steps']}: loss {res['loss_first']:.4f} -> "
        f"torch {res['loss_last_torch']:.6f} / loglik {res['loss_last_loglik']:.6f}; "
        f"max relative difference {res['max_rel_diff']:.2e} (rtol {args.rtol:g}, first step over it: "
        f"{res['first_step_over_rtol']}); peak extra memory torch "
        f"{res['peak_extra_MB_torch']} MB, loglik {res['peak_extra_MB_loglik']} MB -> {'OK' if res['ok'] else 'FAIL'}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if res["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
