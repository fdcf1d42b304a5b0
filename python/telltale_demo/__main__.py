"""The demo agent of `make run`: a real (toy) language model in a real agent loop.

    python3 -m telltale_demo [--endpoint E] [--agent NAME] [--rate TURNS_PER_S]
                             [--drift | --drift-after S] [--duration S] [--seed N]
                             [--no-policy]

Each turn: a session, a plan (reasoning step), real tool calls (SQL against a SQLite database
created at start, a file read, a calculator), then an answer generated token by token by the
bigram model of telltale_demo/model.py, every token's logits row passed to telltale (no copy)
with the guard on. Drift (--drift now, or --drift-after S seconds): the sampling temperature
rises, the prompt switches to another licence's vocabulary (out-of-distribution contexts), and
the database tool starts failing (its table is renamed away, so the queries fail for real), and
now and then the agent "cleans up" with a DELETE without WHERE, which the compliance policy of
telltale_demo/policy.conf blocks before SQLite runs it (--no-policy lets it run).
The model is a toy; every number it reports is real.
"""

import argparse
import ast
import operator
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import telltale  # noqa: E402
from telltale_demo.model import CORPORA, BigramModel, read_corpus  # noqa: E402

QUESTIONS = [
    ("which licence allows the most", "SELECT name, words FROM licenses ORDER BY words DESC LIMIT 3"),
    ("how long is the gpl", "SELECT words FROM licenses WHERE name = 'GPL-3'"),
    ("what does apache say about patents", "SELECT name FROM licenses WHERE text LIKE '%patent%'"),
    ("count the licences that mention warranty",
     "SELECT count(*) FROM licenses WHERE text LIKE '%warranty%'"),
    ("which licences are short", "SELECT name FROM licenses WHERE words < 2000"),
]
FILES = ["GPL-3", "Apache-2.0", "Artistic", "MPL-2.0", "BSD", "GFDL-1.3"]

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.USub: operator.neg}


def calculator(expr):
    """Evaluate + - * / on numbers, nothing else."""
    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.operand))
        raise ValueError("unsupported expression")
    return ev(ast.parse(expr, mode="eval"))


def make_db(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS licenses (name TEXT PRIMARY KEY, words INT, text TEXT)")
    for name in FILES:
        p = os.path.join(CORPORA, name)
        if os.path.exists(p):
            with open(p, encoding="utf-8", errors="replace") as f:
                text = f.read()
            db.execute("INSERT OR REPLACE INTO licenses VALUES (?, ?, ?)",
                       (name, len(text.split()), text))
    db.commit()
    return db


class Agent:
    def __init__(self, tt, args):
        self.tt = tt
        self.rng = np.random.default_rng(args.seed)
        self.pyrng = random.Random(args.seed)
        self.args = args
        t0 = time.monotonic()
        self.model = BigramModel(read_corpus("GPL-3"))
        self.other = read_corpus("Artistic") + read_corpus("MPL-2.0")
        tt.log("model trained", words=len(self.model.vocab), seconds=time.monotonic() - t0,
               corpus="GPL-3")
        self.dbdir = tempfile.mkdtemp(prefix="telltale-demo-")
        self.db = make_db(os.path.join(self.dbdir, "demo.db"))
        self.start = time.monotonic()
        self.turn = 0
        # Session ids are unique across runs (two runs against one store must not merge their
        # sessions): a random run id, then the turn.
        self.run_id = os.urandom(4).hex()
        self.drifting = False

    def drift_level(self):
        """0 before the drift, rising to 1 over the 60 s after it starts."""
        a = self.args
        if a.drift:
            return 1.0
        if a.drift_after is None:
            return 0.0
        return min(1.0, max(0.0, (time.monotonic() - self.start - a.drift_after) / 60.0))

    def tool_sql(self, query, drift):
        if drift > 0 and not self.drifting:
            # The failing tool: the table goes away, the queries fail in SQLite itself.
            self.db.execute("ALTER TABLE licenses RENAME TO licenses_archived")
            self.db.commit()
            self.drifting = True
            self.tt.log("database migrated: licenses renamed", "warn")
        with self.tt.step("retrieval", name="sql", query=query) as s:
            if self.drifting and self.pyrng.random() > 0.8 - 0.6 * drift:
                rows = self.db.execute(query.replace("licenses", "licenses_archived")).fetchall()
            else:
                rows = self.db.execute(query).fetchall()  # raises once the table is gone
            s.result_bytes = len(repr(rows))
        return rows

    def cleanup(self, session):
        """A drifting agent's bad idea: empty the archived table. The policy blocks it."""
        query = "DELETE FROM licenses_archived"
        try:
            with self.tt.step("retrieval", name="sql", query=query, session=session) as s:
                s.result_bytes = self.db.execute(query).rowcount
                self.db.commit()
        except telltale.Blocked as e:
            self.tt.log("cleanup refused: %s" % e.reason, "warn", session=session)

    def tool_read(self, name):
        with self.tt.step("tool", name="read_file", query=os.path.join(CORPORA, name)) as s:
            with open(os.path.join(CORPORA, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
            s.result_bytes = len(text)
        return text

    def tool_calc(self, expr):
        with self.tt.step("tool", name="calculator", query=expr) as s:
            v = calculator(expr)
            s.result_bytes = len(str(v))
        return v

    def answer(self, session, prompt_words, temperature, n):
        model = self.model
        words = []
        prev = prompt_words[-1] if prompt_words else "."
        with self.tt.step("llm", name="generate", query=" ".join(prompt_words[-6:])):
            with self.tt.response(session=session, model="bigram-gpl3",
                                  temperature=round(temperature, 3), max_tokens=n) as r:
                flags = 0
                for i in range(n):
                    row = model.logits(prev, temperature)
                    chosen = model.sample(row, self.rng)
                    # The row is read in place, no copy; the word goes with its id.
                    word = model.vocab[chosen]
                    v = r.token(row, chosen, text=word if i == 0 else " " + word)
                    if v is telltale.Verdict.HALT:
                        break
                    flags += v is telltale.Verdict.FLAG
                    prev = model.vocab[chosen]
                    words.append(prev)
                    if i > 8 and prev == ".":
                        break
                    # Out-of-distribution prompt words keep coming in while drifting.
                    if self.drifting and self.pyrng.random() < 0.5 * self.drift_level():
                        prev = self.pyrng.choice(self.other)
        s = r.summary
        return words, s, flags

    def run_turn(self):
        self.turn += 1
        session = "session-%s-%d" % (self.run_id, self.turn)
        drift = self.drift_level()
        temperature = 0.8 + 1.7 * drift
        q, sql = QUESTIONS[self.turn % len(QUESTIONS)]
        tt = self.tt
        with tt.step("agent", name="turn", query=q, session=session):
            tt.log("question", session=session, question=q)
            with tt.step("reasoning", name="plan", query=q):
                plan = ["sql", "read_file", "calculator"]
                self.pyrng.shuffle(plan)
            facts = []
            for tool in plan:
                try:
                    if tool == "sql":
                        facts.append(str(self.tool_sql(sql, drift))[:80])
                    elif tool == "read_file":
                        text = self.tool_read(FILES[self.turn % len(FILES)])
                        facts.append("%d words" % len(text.split()))
                    else:
                        a, b = self.pyrng.randint(2, 999), self.pyrng.randint(2, 99)
                        facts.append(str(self.tool_calc("%d * %d + %d / 4" % (a, b, a))))
                except Exception as e:  # the step recorded the failure; the agent carries on
                    tt.log("tool failed: %s" % e, "error", session=session, tool=tool)
            prompt = q.split()
            if self.drifting:
                prompt += self.pyrng.sample(self.other, 3)
                if self.pyrng.random() < 0.25 * drift:
                    self.cleanup(session)
            words, summary, flags = self.answer(session, prompt, temperature,
                                                self.pyrng.randint(12, 40))
            text = " ".join(words)
            tt.log("answer", session=session, text=text[:400], tokens=summary.tokens,
                   confidence=round(summary.confidence, 4), verdict=summary.verdict.name,
                   reason=summary.reason)
            tt.metric("answer_confidence", summary.confidence, session=session)
            tt.metric("answer_perplexity", summary.perplexity, session=session)
            tt.metric("temperature", temperature, session=session)
            tt.metric("guard_flags", flags, "counter", session=session)
        return summary


def main(argv=None):
    ap = argparse.ArgumentParser(prog="telltale_demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default=os.environ.get("TELLTALE_ENDPOINT"))
    ap.add_argument("--agent", default="demo-agent")
    ap.add_argument("--rate", type=float, default=2.0, help="turns per second (default 2)")
    ap.add_argument("--drift", action="store_true", help="drift from the start")
    ap.add_argument("--drift-after", type=float, default=None, metavar="S",
                    help="start drifting after S seconds")
    ap.add_argument("--duration", type=float, default=None, metavar="S")
    ap.add_argument("--turns", type=int, default=None, help="stop after N turns")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--spool-dir", default=None, metavar="DIR",
                    help="spool to DIR while the collector is away (make run sets it)")
    ap.add_argument("--spool-max-bytes", default="64M", metavar="N")
    ap.add_argument("--no-policy", action="store_true",
                    help="run without the compliance policy of telltale_demo/policy.conf")
    args = ap.parse_args(argv)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    # Thresholds fitted to this model: its answers' confidence (geometric mean of p(chosen)) is
    # about 0.05-0.15 in normal operation, and falls to about 0.001-0.01 while drifting.
    policy = telltale.GuardPolicy(token_min_prob=0.00001, window_min_confidence=0.008, window=8,
                                  response_min_confidence=0.015, action=telltale.Verdict.FLAG)
    spool = {"spool_dir": args.spool_dir, "spool_max_bytes": args.spool_max_bytes} \
        if args.spool_dir else {}
    with telltale.Client(args.endpoint, agent=args.agent, guard=policy, close_timeout=3.0,
                         **spool) as tt:
        if not args.no_policy:
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "policy.conf")) as f:
                tt.comply_policy(f.read())
        agent = Agent(tt, args)
        print("demo agent: %d-word bigram model from %s/GPL-3; streaming to %s"
              % (len(agent.model), CORPORA, args.endpoint or "the default endpoint"),
              file=sys.stderr)
        t_end = None if args.duration is None else time.monotonic() + args.duration
        try:
            while not stop and (t_end is None or time.monotonic() < t_end) and \
                    (args.turns is None or agent.turn < args.turns):
                t0 = time.monotonic()
                s = agent.run_turn()
                print("turn %d: %d tokens, confidence %.3f, %s" % (
                    agent.turn, s.tokens, s.confidence, s.verdict.name), file=sys.stderr)
                time.sleep(max(0.0, 1.0 / args.rate - (time.monotonic() - t0)))
        except KeyboardInterrupt:
            pass
        st = tt.stats()
        print("demo agent: %d events, %d acked, %d dropped" % (st.emitted, st.acked,
                                                                st.dropped_total), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
