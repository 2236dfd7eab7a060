"""`bertserve plan`: the cheapest configuration of a served model under a latency budget, and
the fleet for a target load.

    settings.py         PlanSettings: what the command is told
    knobs.py            a candidate (variant + scheduling knobs) and its config override
    variants.py         the variants of a model: repository siblings, GPU precisions
    space.py            the ladder of each knob, moves along them, canonical forms
    capacity_search.py  one candidate's capacity within the budget, in few points
    search.py           the climb: noise, pruning, screening, the winner
    control.py          the server's repository API (load with override, unload)
    restore.py          every model put back as it was found, whatever happens
    bench.py            candidates loaded into the server and measured as bertserve perf
    capacity.py         one replica's curve x replicas: fleet size, cost, autoscaler
    pareto.py           the Pareto front of throughput against latency
    session.py          one plan from start to end
    sections.py         the plan's part of the report
    outputs.py          config.pbtxt, plan.json, runs, report, Helm values
    display.py          progress and summary on the terminal

Nothing is imported here, so that `bertserve` subcommands stay light to import.
"""

__all__: list[str] = []
