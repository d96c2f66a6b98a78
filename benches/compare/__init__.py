"""Side-by-side comparison of gofast for Python with grpcio, pyzmq, asyncio streams,
grpc.aio, zmq.asyncio and raw sockets on 127.0.0.1.

Run ``python -m benches.compare`` from the repository root (``--quick`` for a
short run, ``--help`` for the options). Every cell (one workload against one
system) runs a server and a client in two fresh processes, so that CPU time and
peak RSS are per side and per system, and a cell that overruns its deadline is
killed and reported as "timeout" instead of hanging the run.

Modules, one job each:
  spec.py      what a cell is (Spec) and what a client measured (Outcome)
  workloads.py the workloads and their message counts (full and --quick)
  measure.py   CPU time, peak RSS and latency percentiles inside a process
  child.py     the entry point of a server or client process
  runner.py    spawns both processes of a cell, enforces the deadline, kills them
  report.py    the table (text and markdown) and the PNG chart
  machine.py   what the numbers were measured on
  systems/     one module per system: serve() and drive() for each workload kind
"""
