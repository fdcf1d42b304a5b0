"""A toy word-level language model that produces real logits.

An interpolated bigram model (bigram counts mixed with unigram counts, with add-k smoothing)
trained in a fraction of a second on a text that Debian ships in every installation: the
licence texts of /usr/share/common-licenses (package base-files). It is a toy: it writes
licence-flavoured word salad. But its logits are real: each token's distribution comes from the
counts, the sampler draws from it, and telltale measures exactly what was sampled from.
"""

import os
import re

import numpy as np

CORPORA = "/usr/share/common-licenses"
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[.,;:]")


def read_corpus(name):
    path = name if os.sep in name else os.path.join(CORPORA, name)
    with open(path, encoding="utf-8", errors="replace") as f:
        return WORD.findall(f.read().lower())


class BigramModel:
    """P(w | prev) = lam * bigram(prev, w) + (1 - lam) * unigram(w), over the words of a corpus."""

    def __init__(self, words, lam=0.85, k=0.1):
        self.vocab = sorted(set(words))
        self.index = {w: i for i, w in enumerate(self.vocab)}
        v = len(self.vocab)
        ids = np.fromiter((self.index[w] for w in words), dtype=np.int64, count=len(words))
        uni = np.bincount(ids, minlength=v).astype(np.float64) + k
        self.log_uni = np.log(uni / uni.sum())
        self.uni = uni / uni.sum()
        # Bigram counts as a sparse table: for each previous word, its successors and counts.
        pairs = ids[:-1] * v + ids[1:]
        keys, counts = np.unique(pairs, return_counts=True)
        prev = keys // v
        self.succ = {}
        starts = np.searchsorted(prev, np.arange(v + 1))
        for p in range(v):
            a, b = starts[p], starts[p + 1]
            if b > a:
                self.succ[p] = (keys[a:b] % v, counts[a:b].astype(np.float64))
        self.lam = lam
        self.row = np.empty(v, np.float32)

    def __len__(self):
        return len(self.vocab)

    def logits(self, prev_word, temperature=1.0):
        """The logits of the next word after prev_word, scaled by 1/temperature, in a reused
        float32 row (the sampler draws from softmax of exactly this row)."""
        p = self.uni * (1.0 - self.lam)
        s = self.succ.get(self.index.get(prev_word, -1))
        if s is not None:
            nxt, cnt = s
            p = p.copy()
            p[nxt] += self.lam * cnt / cnt.sum()
        else:
            p = p / (1.0 - self.lam)  # unseen context: back off to the unigram distribution
        np.divide(np.log(p), temperature, out=self.row, casting="same_kind")
        return self.row

    def sample(self, row, rng):
        z = row.astype(np.float64)
        z -= z.max()
        e = np.exp(z)
        return int(rng.choice(len(e), p=e / e.sum()))
