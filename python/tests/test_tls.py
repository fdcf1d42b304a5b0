"""tls:// from Python: the same endpoint strings and TLS settings as the C library, against a
real `telltale serve` with a TLS listener and a throwaway CA (scripts/make-test-pki, certtool)."""

import os
import socket
import subprocess
import time

from conftest import MULT, ROOT, Collector


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _pki(tmp_path):
    d = str(tmp_path / "pki")
    # The sanitizer runtime preloaded into the tests' Python must not reach the shell that
    # runs certtool (dash under ThreadSanitizer's preload has died of SIGSEGV).
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS")}
    subprocess.run([os.path.join(ROOT, "scripts", "make-test-pki"), d], check=True, env=env)
    return d


def test_tls_endpoint_stores_events_and_refuses_an_untrusted_collector(telltale, tmp_path,
                                                                       sockdir):
    pki = _pki(tmp_path)
    ep = "tls://127.0.0.1:%d" % _free_port()
    (tmp_path / "serve").mkdir()
    # TLS without client certificates only encrypts: on loopback, --ingest-open lets the agent
    # in without a token (docs/security.md, "TLS listeners and who may ingest")
    col = Collector(tmp_path / "serve", sockdir,
                    ["--listen", ep, "--tls-cert", os.path.join(pki, "server.pem"),
                     "--tls-key", os.path.join(pki, "server.key"), "--ingest-open"])
    try:
        os.environ["TELLTALE_TLS_CA"] = os.path.join(pki, "ca.pem")
        try:
            with telltale.Client(ep, agent="py-tls") as c:
                for i in range(500):
                    c.log("over tls %d" % i)
                assert c.flush(10 * MULT)
                st = c.stats()
                assert st.acked == 500 and st.tls_failures == 0, st
        finally:
            del os.environ["TELLTALE_TLS_CA"]
        assert len(col.events(agent="py-tls")) == 500

        # Trusting another CA: refused, with the reason, and nothing more stored.
        with telltale.Client(ep, agent="py-careful", backoff_max_ms=200, close_timeout=0.5,
                             **{"tls.ca": os.path.join(pki, "other-ca.pem")}) as c:
            c.log("must not arrive")
            deadline = time.monotonic() + 10 * MULT
            while c.stats().tls_failures == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            st = c.stats()
            assert st.tls_failures >= 1 and st.acked == 0, st
            assert "issuer is unknown" in c.connection_error()
        assert col.events(agent="py-careful") == []
    finally:
        col.stop()
