# `make soak`: the long versions of the reliable-delivery scenarios
# (tests/integration/test_delivery.c, test_robust.c, test_overload.c, test_clientfault.c with
# TT_SOAK=1: 1000 forks, 100 close deadlines, a 10 min outage, S19's 2 h outage with two agent
# restarts, 150 collector kills, 4000 allocation faults, ...; test_dbfault.c: 200 power losses;
# test_retention.c: 5 minutes of streaming under --max-bytes; test_nats_faults.c: a NATS node
# killed every 10 s for 5 min, and a 5 min broker outage past the 2 min duplicate window). Not part of `make test`; expect
# a few hours.
soak: all $(RUNNER) | $(DEPS_TEST)
	$(TEST_ENV) TT_SOAK=1 TT_TEST_TIMEOUT_MULT=$(or $(SOAK_TIMEOUT_MULT),20) $(RUNNER) \
		$(or $(T),delivery_ robust_ dbfault_s overload_ memory_ clientfault_ retention_ nats_faults_)
