"""What the benchmarks in bench/ share, so that every script measures and reports alike.

- ``stats``: medians and percentiles of samples;
- ``report``: markdown tables, verdicts, number formats, a part that fails shown as a reason;
- ``processes``: child processes that are always stopped, and readings from /proc;
- ``servers``: isolated ``jupyter server`` subprocesses and small floor servers;
- ``client``: WebSocket clients of the chat protocol;
- ``fleet``: a light client for many replies at once (a few sockets, many conversations each);
- ``postgres``: a throwaway Postgres cluster with durable settings, and its CPU, WAL and disk;
- ``stores``: stored replies written through the store's own API;
- ``chromium``: Chromium for Playwright, and the CDP sampling profiler;
- ``traces``: a page's main-thread tasks in a window of a Chrome trace.

The scripts import these as ``harness.<module>``: run as ``python bench/<script>.py``, Python
puts bench/ first on the path. Nothing here is imported by the package or the tests.
"""
