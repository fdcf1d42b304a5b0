# The Python package's benchmark (bench/python.py): cost per Python call of client.log, a step
# and a token of a 32k-vocab row, beside logging.handlers.QueueHandler (and numpy for the token)
# in the same run. Runs with Debian's /usr/bin/python3 against the build tree.
BENCH_CMDS += TELLTALE_LIBRARY=$(abspath $(LIB_SO)) TT_BIN=$(abspath $(BIN)) \
	/usr/bin/python3 bench/python.py
