"""``sandbox-kernel grade``: a class's notebooks, each run top to bottom in
a fresh sandbox kernel of its own (classroom policy, no network, an empty
workspace), with an isolate-style verdict per cell and per submission.

- report.py: verdicts and the JSON/CSV report (pure functions);
- run.py: the private kernelspec, the workspaces, one submission with nbclient;
- cli.py: the arguments, their checks, -j within the memory budget, the progress.

May import: runtime.spec (parsers), session.stats (where the stats ride),
kernel.install (the kernelspec); nbclient, nbformat, jupyter_client.
"""
