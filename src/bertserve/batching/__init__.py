"""Batching: pure stack/split functions and the scheduler that owns the queue."""

from bertserve.batching.batch import split_outputs, stack_inputs
from bertserve.batching.policy import BatchingPolicy
from bertserve.batching.scheduler import Scheduler

__all__ = ["BatchingPolicy", "Scheduler", "split_outputs", "stack_inputs"]
