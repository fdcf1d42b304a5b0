# The Python package's benchmark (bench/python.py, run by Debian's /usr/bin/python3 through its
# first line): cost per Python call of client.log, a step and a token of a 32k-vocab row, beside
# logging.handlers.QueueHandler (and numpy for the token) in the same run. It uses the binary
# that `make bench` passes as TT_BIN and the libtelltale.so next to it.
BENCH_CMDS += bench/python.py
