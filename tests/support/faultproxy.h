/*
 * faultproxy.h - a TCP proxy for the tests that sits between an agent and the collector and
 * misbehaves on command, as a bad network does: added latency (in steps), a bandwidth cap,
 * resets of every open connection (RST), and a black hole (bytes are taken from both sides and
 * thrown away, so neither peer sees an error: a half-open link).
 *
 * Each connection is served by a thread of its own; the settings apply to every connection at
 * once, including those already open. Listens on 127.0.0.1 on a port of its own choosing.
 */
#ifndef TT_TEST_FAULTPROXY_H
#define TT_TEST_FAULTPROXY_H

#include <stdint.h>

struct tt_fault_proxy;

/* Start a proxy to upstream ("127.0.0.1:PORT" or "tcp://127.0.0.1:PORT"); fails the test if it
 * cannot. */
struct tt_fault_proxy *tt_fault_proxy_start(const char *upstream);

/* "tcp://127.0.0.1:PORT", the endpoint agents should use. */
const char *tt_fault_proxy_endpoint(const struct tt_fault_proxy *p);

/* Hold every chunk this long before passing it on (0: none). */
void tt_fault_proxy_latency(struct tt_fault_proxy *p, uint32_t ms);

/* At most this many bytes per second per direction and connection (0: no cap). */
void tt_fault_proxy_rate(struct tt_fault_proxy *p, uint64_t bytes_per_s);

/* Pass nothing on while on: both directions are read and dropped. */
void tt_fault_proxy_blackhole(struct tt_fault_proxy *p, int on);

/* Reset (RST) every connection open now; new ones are served as usual. */
void tt_fault_proxy_reset(struct tt_fault_proxy *p);

/* Connections accepted so far, and bytes passed upstream (agent to collector). */
uint64_t tt_fault_proxy_accepted(struct tt_fault_proxy *p);
uint64_t tt_fault_proxy_bytes_up(struct tt_fault_proxy *p);

/* Reset every connection, wait for the threads to end, free. */
void tt_fault_proxy_stop(struct tt_fault_proxy *p);

#endif
