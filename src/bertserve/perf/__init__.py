"""Measuring a served model, as perf_analyzer does.

    settings.py        PerfSettings: perf_analyzer's flags, one field each
    input_data.py      request tensors: zero, random, perf_analyzer's input-data JSON
    transport.py       what a wire protocol must offer the load generator; shared helpers
    protocols.py       the transports by protocol name, each imported on demand
    http_transport.py  raw HTTP/1.1 on keep-alive asyncio connections (httptools)
    grpc_transport.py  grpc.aio with tritonclient's compiled protos
    load.py            closed-loop concurrency and open-loop request-rate load
    window.py          per-request records, windows, server-statistics deltas
    stability.py       perf_analyzer's stability rule
    profiler.py        the sweep: windows until stable, one Measurement per load
    display.py         rich progress and summary table
    session.py         one sweep from the command line to its CSV / JSON files
    results.py         Measurement / Run records, perf_analyzer CSV, bertserve JSON
    analyzer.py        finding and running the real perf_analyzer

Nothing is imported here, so that `bertserve` subcommands stay light to import.
"""

__all__: list[str] = []
