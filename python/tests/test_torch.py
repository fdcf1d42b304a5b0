"""PyTorch: tensors read in place, the accelerator path (forced on the CPU: the same torch code
runs on any device), the batched call of one decode step, and the generation hook with a small
model trained here. torch is a test dependency (scripts/install-deps test: python3-torch)."""

import math
import sys

import numpy as np
import pytest
import torch

from conftest import MULT


@pytest.fixture
def device_path(telltale, monkeypatch):
    """Send CPU tensors through the accelerator path, and record what crosses to the host."""
    monkeypatch.setattr(telltale._torch, "force_device_path", True)
    moved = []
    cpu = torch.Tensor.cpu

    def spy(self, *a, **kw):
        moved.append(self.numel())
        return cpu(self, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "cpu", spy)
    return moved


def _same(a, b, rel=2e-6):
    """Two TokenStats: equal ids, ranks, flags and top-k ids; values within rel (float32)."""
    assert (a.chosen, a.rank, a.flags) == (b.chosen, b.rank, b.flags), (a, b)
    assert [i for i, _ in a.topk] == [i for i, _ in b.topk], (a.topk, b.topk)
    for x, y in [(a.prob, b.prob), (a.entropy, b.entropy), (a.margin, b.margin)] + \
            [(p, q) for (_, p), (_, q) in zip(a.topk, b.topk)]:
        assert abs(x - y) <= rel * max(abs(x), abs(y)) + 1e-9, (a, b)
    if math.isinf(a.logprob) or math.isinf(b.logprob):
        assert a.logprob == b.logprob
    else:
        assert abs(a.logprob - b.logprob) <= rel * abs(a.logprob) + 1e-6


def _rows():
    """Rows with every edge the statistics have: plain, peaked, NaN, +inf, all -inf, ties at the
    top-k boundary, a chosen id out of range or at -inf."""
    rng = np.random.default_rng(5)
    out = []
    for scale in (0.5, 3.0, 12.0):
        x = rng.normal(0, scale, 5000).astype(np.float32)
        out.append((x, int(rng.integers(5000))))
        out.append((x, int(np.argmax(x))))
    peaked = rng.normal(0, 1, 3000).astype(np.float32)
    peaked[17] = 40.0
    out.append((peaked, 17))
    nan = rng.normal(0, 2, 3000).astype(np.float32)
    nan[[3, 99, 2000]] = np.nan
    out.append((nan, 99))
    out.append((nan, 4))
    inf = rng.normal(0, 2, 3000).astype(np.float32)
    inf[[10, 20]] = np.inf
    out.append((inf, 20))
    out.append((inf, 21))
    out.append((np.full(64, -np.inf, np.float32), 3))
    ties = np.zeros(4000, np.float32)  # every entry ties: the top-k is the lowest ids
    ties[[3000, 3500]] = 1.0
    out.append((ties, 3500))
    out.append((rng.normal(0, 1, 100).astype(np.float32), 100))  # out of range
    minf = rng.normal(0, 1, 100).astype(np.float32)
    minf[7] = -np.inf
    out.append((minf, 7))
    return out


def test_cpu_tensors_are_read_in_place_with_the_numpy_statistics(collector, telltale):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, 6000).astype(np.float32)
    t = torch.from_numpy(x.copy())
    with telltale.Client(collector.endpoint, agent="py-torch") as c:
        with c.response(model="toy") as r:
            for dt, npdt in ((torch.float32, np.float32), (torch.float16, np.float16)):
                r.token(x.astype(npdt), 11)
                ref = r.last
                r.token(t.to(dt), 11)
                _same(r.last, ref, 0)  # the same bytes read by the same code: identical
            bf = t.to(torch.bfloat16)
            r.token(bf.view(torch.int16).numpy().view(np.uint16), 11)
            ref = r.last
            r.token(bf, 11)
            _same(r.last, ref, 0)
            # In place: a change made to the tensor shows at the next call, no copy was read.
            t[11] = 50.0
            r.token(t, 11)
            assert r.last.prob > 0.99 and r.last.rank == 0
            # Strided views: every third entry, a column of a matrix.
            base = torch.zeros(3 * 1000)
            base[3 * 7] = 30.0
            base[3 * 7 + 1] = 1e6  # between two entries of the view: never read
            r.token(base[::3], 7)
            assert r.last.prob > 0.99 and r.last.rank == 0
            m = torch.zeros(1000, 4)
            m[9, 2] = 30.0
            m[9, 3] = 1e6
            r.token(m[:, 2], 9)
            assert r.last.prob > 0.99
            # A tensor that requires grad is read as it is (no graph is built).
            w = torch.zeros(500, requires_grad=True)
            r.token(w, 1)
            assert abs(r.last.prob - 1 / 500) < 1e-7
            with pytest.raises(TypeError, match="float32"):
                r.token(torch.zeros(8, dtype=torch.float64), 0)
            with pytest.raises(ValueError, match="1-D"):
                r.token(torch.zeros(2, 8), 0)
            with pytest.raises(ValueError, match="empty"):
                r.token(torch.zeros(0), 0)
            with pytest.raises(TypeError, match="dense"):
                r.token(torch.zeros(8).to_sparse(), 0)
            assert r.tokens == 10
        assert c.close(5 * MULT)
    ends = collector.events(agent="py-torch", kind="response_end")
    assert len(ends) == 1


def test_accelerator_path_gives_the_numpy_statistics_and_moves_no_row(collector, telltale,
                                                                       device_path):
    cases = _rows()
    with telltale.Client(collector.endpoint, agent="py-torch-dev",
                         **{"response.topk": 32}) as c:
        with c.response(model="toy") as host, c.response(model="toy") as dev:
            for x, chosen in cases:
                for dt in (torch.float32, torch.float16, torch.bfloat16):
                    t = torch.from_numpy(x).to(dt)
                    if dt is torch.float32:
                        host.token(x, chosen)
                    elif dt is torch.float16:
                        host.token(x.astype(np.float16), chosen)
                    else:
                        host.token(t.view(torch.int16).numpy().view(np.uint16), chosen)
                    n_moves = len(device_path)
                    dev.token(t, chosen)
                    assert len(device_path) > n_moves  # the device path ran
                    _same(dev.last, host.last)
            assert dev.tokens == host.tokens == 3 * len(cases)
        # Only scalars and the top-k crossed: never a row (the rows have 64 to 6000 entries).
        assert device_path and max(device_path) <= 32, device_path
        hs, ds = host.summary, dev.summary
        assert hs.tokens == ds.tokens
        assert hs.mean_logprob == ds.mean_logprob == -math.inf  # chosen ids at -inf count
        assert abs(hs.mean_entropy - ds.mean_entropy) <= 1e-5 * abs(hs.mean_entropy)
        assert hs.min_logprob == ds.min_logprob


def test_token_batch_matches_single_row_calls_for_numpy_and_tensors(collector, telltale,
                                                                     monkeypatch):
    rng = np.random.default_rng(9)
    B, V = 6, 3000
    wide = rng.normal(0, 3, (B, V + 40)).astype(np.float32)
    x = wide[:, 20:20 + V]  # rows apart by V + 40 elements
    assert not x.flags.c_contiguous
    with telltale.Client(collector.endpoint, agent="py-batch",
                         **{"guard.token_min_prob": 0.001, "guard.action": "flag"}) as c:
        single = [c.response(model="toy").__enter__() for _ in range(B)]
        batched = [c.response(model="toy").__enter__() for _ in range(B)]
        ways = ["numpy", "numpy-f16", "torch", "torch-bf16-T", "device", "device-f16"]
        flagged = 0
        for step, way in enumerate(ways):
            chosen = rng.integers(0, V, B)
            chosen[step % B] = int(np.argmax(x[step % B]))
            live = [None if b == 4 and step >= 3 else batched[b] for b in range(B)]
            monkeypatch.setattr(telltale._torch, "force_device_path", way.startswith("device"))
            # device-f16 in chunks of two rows: the device's temporaries bounded per chunk
            monkeypatch.setattr(telltale._torch, "DEVICE_TEMP_BYTES",
                                24 * V * 2 if way == "device-f16" else 96 << 20)
            if way == "numpy":
                logits, rows = x, x
            elif way == "numpy-f16":
                logits = rows = x.astype(np.float16)
            elif way == "torch":
                logits = torch.from_numpy(x)
                rows = x
            elif way == "torch-bf16-T":
                tb = torch.from_numpy(np.ascontiguousarray(x.T)).to(torch.bfloat16)
                logits = tb.T  # a [B, V] view of a [V, B] tensor: stride B, row stride 1
                rows = tb.T.contiguous().view(torch.int16).numpy().view(np.uint16)
            elif way == "device":
                logits, rows = torch.from_numpy(x.copy()), x
            else:
                logits = torch.from_numpy(x.astype(np.float16))
                rows = x.astype(np.float16)
            ids = torch.from_numpy(chosen) if way.startswith(("torch", "device")) else chosen
            verdicts = telltale.token_batch(live, logits, ids)
            assert len(verdicts) == B
            monkeypatch.setattr(telltale._torch, "force_device_path", False)
            for b in range(B):
                if live[b] is None:
                    assert verdicts[b] is telltale.Verdict.PASS
                    continue
                v = single[b].token(rows[b], int(chosen[b]))
                assert verdicts[b] is v
                flagged += v is telltale.Verdict.FLAG
                _same(batched[b].last, single[b].last,
                      0 if not way.startswith("device") else 2e-6)
        assert 0 < flagged < len(ways) * B
        for b in range(B):
            s, t = single[b].end(), batched[b].end()
            assert t.tokens == s.tokens == (3 if b == 4 else len(ways))  # 4 ended at step 3
            assert abs(s.mean_logprob - t.mean_logprob) <= 1e-6 * abs(s.mean_logprob)
            assert s.verdict is t.verdict
        with pytest.raises(RuntimeError, match="not open"):
            telltale.token_batch(batched[:2], x[:2], [0, 1])
        with c.response(model="toy") as r:
            with pytest.raises(ValueError, match="differ"):
                telltale.token_batch([r, r], x[:3], [0, 1, 2])
            with pytest.raises(ValueError, match="differ"):
                telltale.token_batch([r, r], x[:2], [0])
            with pytest.raises(ValueError, match="2-D"):
                telltale.token_batch([r], x[0], [0])
            with pytest.raises(TypeError, match="float32"):
                telltale.token_batch([r], x[:1].astype(np.float64), [0])
            with pytest.raises(TypeError, match="numpy"):
                telltale.token_batch([r], x[:1].tolist(), [0])
            with pytest.raises(OverflowError):
                telltale.token_batch([r], x[:1], [1 << 40])
            assert telltale.token_batch([], np.zeros((0, 5), np.float32), []) == []
            assert r.tokens == 0
        assert c.close(5 * MULT)
    ends = collector.events(agent="py-batch", kind="response_end")
    assert len(ends) == 2 * B + 1


def test_token_batch_raises_halted_after_counting_every_row(collector, telltale):
    x = np.log(np.array([[0.9, 0.1], [0.5, 0.5], [0.99, 0.01]], np.float32))
    with telltale.Client(collector.endpoint, agent="py-batch-halt",
                         **{"guard.token_min_prob": 0.05, "guard.action": "halt"}) as c:
        rs = [c.response(model="toy", raise_on_halt=True).__enter__() for _ in range(3)]
        with pytest.raises(telltale.Halted) as e:
            telltale.token_batch(rs, x, [0, 1, 1])
        assert e.value.response is rs[2]
        assert [r.tokens for r in rs] == [1, 1, 1]
        assert rs[2].summary.verdict is telltale.Verdict.HALT
        assert telltale.token_batch([rs[0], rs[1], None], x, [0, 0, 0]) == \
            [telltale.Verdict.PASS] * 3
        for r in rs[:2]:
            r.end()


class _Bigram(torch.nn.Module):
    """A next-token model: an embedding of the last token and a linear map to the vocabulary."""

    def __init__(self, vocab, dim=16):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab)

    def forward(self, input_ids):  # [B, L] -> logits [B, L, V], as a causal LM returns them
        return self.out(torch.tanh(self.emb(input_ids)))


def _train(corpus):
    words = sorted(set(corpus.split()))
    ids = {w: i for i, w in enumerate(words)}
    seq = torch.tensor([ids[w] for w in corpus.split()])
    torch.manual_seed(0)
    model = _Bigram(len(words))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        logits = model(seq[:-1].unsqueeze(0))[0]
        loss = torch.nn.functional.cross_entropy(logits, seq[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.0, loss.item()  # it learned the corpus
    return model, ids


def _generate(model, prompt, processor, eos, pad, max_new):
    """transformers' greedy search, step by step: the processor sees (input_ids, scores) before
    each token is chosen; finished sequences get the pad token."""
    input_ids = prompt.clone()
    unfinished = torch.ones(prompt.shape[0], dtype=torch.long)
    seen = []
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(input_ids)[:, -1, :]
            scores = processor(input_ids, logits)
            seen.append(scores.clone())
            nxt = torch.argmax(scores, dim=-1)
            nxt = nxt * unfinished + pad * (1 - unfinished)
            input_ids = torch.cat([input_ids, nxt[:, None]], dim=-1)
            unfinished = unfinished & (nxt != eos).long()
            if unfinished.max() == 0:
                break
    return input_ids, seen


def test_logits_recorder_records_a_generation_as_transformers_calls_it(collector, telltale,
                                                                       monkeypatch):
    corpus = " ".join(["the cat sat on the mat .", "a dog ran to the park .",
                       "the sun is hot today .", "we ate some bread and jam ."] * 8)
    model, ids = _train(corpus)
    from telltale.generation import LogitsRecorder
    eos, pad = ids["."], ids["the"]
    prompt = torch.tensor([[ids["the"]], [ids["a"]], [ids["we"]], [ids["sun"]]])
    max_new = 8
    results = {}
    with telltale.Client(collector.endpoint, agent="py-gen") as c:
        for path in ("host", "device"):
            monkeypatch.setattr(telltale._torch, "force_device_path", path == "device")
            rec = LogitsRecorder(c, session="gen-" + path, model="bigram", eos_token_id=eos,
                                 temperature=0.0)
            out, seen = _generate(model, prompt, rec, eos, pad, max_new)
            summaries = rec.finish(out)
            results[path] = (out, seen, summaries)
        monkeypatch.setattr(telltale._torch, "force_device_path", False)
        assert c.close(5 * MULT)
    out, seen, summaries = results["host"]
    # The expected figures, computed here from the same logits with torch's softmax.
    lengths = []
    for b in range(prompt.shape[0]):
        lps = []
        for step, scores in enumerate(seen):
            tok = int(out[b, prompt.shape[1] + step])
            lps.append(float(torch.log_softmax(scores[b].double(), -1)[tok]))
            if tok == eos:
                break
        lengths.append(len(lps))
        s = summaries[b]
        assert s.tokens == len(lps)
        assert abs(s.mean_logprob - sum(lps) / len(lps)) < 1e-5
        assert abs(s.confidence - math.exp(sum(lps) / len(lps))) < 1e-5
        assert abs(s.min_logprob - min(lps)) < 1e-5
    assert min(lengths) < max(lengths)  # sequences ended at different steps
    assert any(n < max_new for n in lengths) and sum(lengths) > len(lengths)
    dev = results["device"][2]
    assert torch.equal(results["device"][0], out)
    for s, d in zip(summaries, dev):
        assert s.tokens == d.tokens and abs(s.mean_logprob - d.mean_logprob) < 1e-6
    # The collector has each sequence as one response with its tokens.
    for path, summ in (("host", summaries), ("device", dev)):
        ends = collector.events(agent="py-gen", kind="response_end", session="gen-" + path)
        assert sorted(e["tokens"] for e in ends) == sorted(s.tokens for s in summ), ends


def test_the_generation_hook_does_not_import_transformers(telltale):
    import subprocess
    code = ("import sys, telltale.generation as g; assert 'transformers' not in sys.modules; "
            "r = g.LogitsRecorder(None); print(callable(r))")
    env = dict(__import__("os").environ)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=__import__("os").path.dirname(telltale.__file__) + "/..")
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
