"""A generation hook: records every generated token of a batch of sequences, usable as a Hugging
Face transformers `LogitsProcessor` (docs/python.md "PyTorch").

    from telltale.generation import LogitsRecorder
    rec = LogitsRecorder(client, model="my-model", eos_token_id=tok.eos_token_id)
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([rec]))
    summaries = rec.finish(out)   # records the last token, ends the responses

A LogitsProcessor is called as processor(input_ids, scores) before each token is chosen: scores
([batch, vocab]) are the logits the next token is drawn from and input_ids ([batch, length]) the
sequences so far. The token chosen from a step's scores is therefore known only at the next call
(the last column of its input_ids), or at the end (finish(sequences)). The recorder keeps a
reference to the previous step's scores (no copy) and adds their row b with that token to the
response of sequence b in one batched call (telltale.token_batch): read in place on the CPU,
statistics computed on the device for a tensor on an accelerator. Place it last in the
processor list, so that the scores it sees are those the token is drawn from, and use it with
num_beams=1 (greedy or sampling: beam search reorders the sequences between steps).

transformers is never imported here: the recorder is a plain callable with the processor's
signature, which LogitsProcessorList accepts, and it subclasses transformers.LogitsProcessor only
when transformers is already imported.
"""

import sys

import telltale


class LogitsRecorder:
    """Records the tokens of one generation of B sequences as B responses of client (begun at the
    first call, in session, of model, with params as their sampling parameters). A sequence is
    over once it chose eos_token_id (an int or a list of ints; that token is recorded): the
    padding generate appends after it is not. verdicts holds the last verdict of each sequence
    and responses the open responses (None once over)."""

    def __init__(self, client, *, session=None, model=None, eos_token_id=None,
                 raise_on_halt=False, **params):
        self.client = client
        self.session = session
        self.model = model
        if eos_token_id is None:
            self.eos = frozenset()
        elif isinstance(eos_token_id, int):
            self.eos = frozenset((eos_token_id,))
        else:
            self.eos = frozenset(int(x) for x in eos_token_id)
        self.raise_on_halt = raise_on_halt
        self.params = params
        self.responses = None
        self.verdicts = None
        self.summaries = None
        self._all = None
        self._pending = None

    def _begin(self, batch):
        self._all = []
        for _ in range(batch):
            r = self.client.response(self.session, self.model, raise_on_halt=self.raise_on_halt,
                                     **self.params)
            self._all.append(r.__enter__())
        self.responses = list(self._all)
        self.verdicts = [telltale.Verdict.PASS] * batch

    def _record(self, chosen):
        scores, self._pending = self._pending, None
        if all(r is None for r in self.responses):
            return
        ids = chosen.tolist() if hasattr(chosen, "tolist") else list(chosen)
        verdicts = telltale.token_batch(self.responses, scores, ids)
        for b, v in enumerate(verdicts):
            if self.responses[b] is None:
                continue
            self.verdicts[b] = v
            if ids[b] in self.eos:
                self.responses[b].end()
                self.responses[b] = None

    def __call__(self, input_ids, scores):
        """The LogitsProcessor call: record the previous step's token (the last column of
        input_ids), keep these scores for the next call; returns scores unchanged."""
        if self._all is None:
            self._begin(scores.shape[0])
        elif self._pending is not None:
            self._record(input_ids[:, -1])
        self._pending = scores
        return scores

    def finish(self, sequences=None):
        """Record the last step's token (the last column of sequences, generate's output; None:
        the last scores were not used) and end every response. Returns their summaries."""
        if self._pending is not None and sequences is not None:
            self._record(sequences[:, -1])
        self._pending = None
        if self._all is None:
            return []
        self.summaries = [r.end() for r in self._all]
        self.responses = [None] * len(self._all)
        return self.summaries

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        self._pending = None  # a failed generation: its last scores were not used
        self.finish()
        return False


# A subclass of transformers' base class when transformers is already loaded (isinstance checks
# then hold); transformers itself is never imported here.
_tf = sys.modules.get("transformers")
if _tf is not None and hasattr(_tf, "LogitsProcessor"):
    LogitsRecorder = type("LogitsRecorder", (LogitsRecorder, _tf.LogitsProcessor),
                          {"__doc__": LogitsRecorder.__doc__, "__module__": __name__})
