"""A training loop that streams its health to telltale: a small character-level language model
(PyTorch, CPU) trained on the licence texts of /usr/share/common-licenses.

    PYTHONPATH=python python3 examples/train.py --endpoint unix:run-data/telltale.sock
        [--agent NAME] [--steps N | --short] [--seed N] [--log-every N]
        [--spike-at STEP] [--nan-at STEP] [--slow-at STEP --slow-steps N --slow-ms MS]

Per training step it reports, through the Python API (docs/training.md):
- a step `train_step` (kind other) with child steps `data`, `forward_backward` and
  `optimizer`: their latencies are the step timings; a step whose loss is not finite ends with
  status error and its update is skipped;
- metrics `loss`, `grad_norm` (before clipping), `lr` and `step_time` (ms);
- every --log-every steps, `throughput` (tokens/s over the interval, data loading included).

The collector's detectors of examples/train.conf watch them: a loss spike, a NaN or inf in any
metric, a throughput drop. The faults can be injected to see them fire: --spike-at trains one
step on a corrupted batch (random targets: a real spike of the real loss), --nan-at poisons one
forward pass with a NaN (as an overflow would; the loop skips that update, as a grad scaler
does), --slow-at makes the data source slow for --slow-steps steps (--slow-ms per batch).

--short trains 600 steps (seconds); the default, 10000 steps, takes about a minute on one core
(more on a loaded machine).
"""

import argparse
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "python"))
import telltale  # noqa: E402

CORPUS = ["/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0",
          "/usr/share/common-licenses/MPL-2.0"]


def read_text():
    parts = []
    for path in CORPUS:
        with open(path, encoding="utf-8", errors="replace") as f:
            parts.append(re.sub(r"\s+", " ", f.read().lower()))
    return " ".join(parts)


class CharModel:
    """Embeddings of the last `context` characters, one hidden layer, logits over the
    characters: a small MLP language model (about 24 k parameters)."""

    def __init__(self, torch, vocab, context=8, dim=16, hidden=128):
        nn = torch.nn
        self.net = nn.Sequential(nn.Embedding(vocab, dim), nn.Flatten(),
                                 nn.Linear(context * dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, vocab))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default=os.environ.get("TELLTALE_ENDPOINT"),
                    help="the collector (unix:PATH, tcp://HOST:PORT, tls://...; default: "
                    "$TELLTALE_ENDPOINT, else the library's default)")
    ap.add_argument("--agent", default="trainer", help="the agent's name (default trainer)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 10000, "
                    "--short: 600)")
    ap.add_argument("--short", action="store_true", help="600 steps")
    ap.add_argument("--batch", type=int, default=64, help="sequences per step (default 64)")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    ap.add_argument("--warmup", type=int, default=50, help="steps of linear learning-rate warm-up")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--log-every", type=int, default=10, help="steps per throughput sample")
    ap.add_argument("--spike-at", type=int, default=-1, metavar="STEP",
                    help="inject a loss spike: train this step on a corrupted batch")
    ap.add_argument("--nan-at", type=int, default=-1, metavar="STEP",
                    help="inject a NaN into this step's forward pass")
    ap.add_argument("--slow-at", type=int, default=-1, metavar="STEP",
                    help="inject a throughput drop: slow the data source from this step")
    ap.add_argument("--slow-steps", type=int, default=40, help="how many steps stay slow "
                    "(default 40)")
    ap.add_argument("--slow-ms", type=float, default=30.0, help="delay added to each slow "
                    "step, ms (default 30)")
    a = ap.parse_args(argv)
    if a.steps is None:
        a.steps = 600 if a.short else 10000
    return a


def main(argv=None):
    a = parse_args(argv)
    import torch

    torch.manual_seed(a.seed)
    torch.set_num_threads(1)  # a small model: one core is faster than several, and polite
    text = read_text()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    context = 8
    model = CharModel(torch, len(chars), context).net
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)

    def lr_at(step):  # linear warm-up, then cosine decay to a tenth
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        t = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(a.seed)
    offsets = torch.arange(context)

    def batch(step):
        if a.slow_at <= step < a.slow_at + a.slow_steps:
            time.sleep(a.slow_ms / 1000)  # a slow data source
        starts = torch.randint(0, len(data) - context - 1, (a.batch,), generator=gen)
        idx = starts[:, None] + offsets
        x, y = data[idx], data[starts + context]
        if step == a.spike_at:  # a corrupted batch: targets that have nothing to do with x
            y = torch.randint(0, len(chars), (a.batch,), generator=gen)
        return x, y

    tokens = 0
    skipped = 0
    with telltale.Client(a.endpoint, agent=a.agent, session="train-%d" % a.seed) as tt:
        tt.log("training started", model="char-mlp", params=sum(p.numel()
                                                                 for p in model.parameters()),
               steps=a.steps, batch=a.batch)
        interval_t0, interval_tokens = time.perf_counter(), 0
        for step in range(a.steps):
            t0 = time.perf_counter()
            lr = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr
            with tt.step("other", "train_step", "step %d" % step) as st:
                with tt.step("other", "data"):
                    x, y = batch(step)
                with tt.step("other", "forward_backward"):
                    logits = model(x)
                    if step == a.nan_at:  # an overflow in the forward pass
                        logits = logits + float("nan")
                    loss = torch.nn.functional.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
                loss_v = float(loss)
                finite = math.isfinite(loss_v) and math.isfinite(grad_norm)
                with tt.step("other", "optimizer") as ost:
                    if finite:
                        opt.step()
                    else:  # never let a NaN into the weights: skip the update
                        opt.zero_grad(set_to_none=True)
                        ost.fail("skipped: non-finite loss or gradient", status="cancelled")
                if not finite:
                    skipped += 1
                    st.fail("non-finite loss %r or gradient norm %r" % (loss_v, grad_norm))
            step_ms = (time.perf_counter() - t0) * 1000
            tokens += a.batch
            interval_tokens += a.batch
            tt.metric("loss", loss_v, unit="nats", step=step)
            tt.metric("grad_norm", grad_norm, step=step)
            tt.metric("lr", lr, step=step)
            tt.metric("step_time", step_ms, unit="ms", step=step)
            if (step + 1) % a.log_every == 0:
                now = time.perf_counter()
                tt.metric("throughput", interval_tokens / (now - interval_t0), unit="tokens/s",
                          step=step)
                interval_t0, interval_tokens = now, 0
        tt.log("training finished", steps=a.steps, skipped=skipped, last_loss=loss_v)
        if not tt.flush(30):
            print("train: not every event was acknowledged", file=sys.stderr)
            return 3
    print("trained %d steps, %d skipped, last loss %.3f" % (a.steps, skipped, loss_v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
