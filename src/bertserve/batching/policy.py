"""The batching settings of one model, read from its config once."""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError

__all__ = ["BatchingPolicy", "MAX_BATCH_SIZE", "MAX_QUEUE_DELAY_US"]

#: Bounds on what a config (or a load request's override) may ask: past them a batch would
#: hold an instance, or a request wait, for as long as a client cared to ask.
MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_US = 60_000_000  # a minute


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    max_batch_size: int  # 0 = the model has no batch axis
    dynamic: bool  # dynamic_batching present: merge requests
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = 0  # 0 = unbounded, as in Triton
    default_timeout_us: int = 0
    allow_timeout_override: bool = True

    @classmethod
    def from_config(
        cls, config: model_config_pb2.ModelConfig, default_max_queue_size: int = 0
    ) -> BatchingPolicy:
        """`default_max_queue_size` bounds the queue where the config leaves it unbounded
        (the server's --default-max-queue-size)."""
        if config.max_batch_size > MAX_BATCH_SIZE:
            raise ConfigError(
                f"max_batch_size {config.max_batch_size} is more than this server runs in one "
                f"batch ({MAX_BATCH_SIZE}); clients send larger batches as several requests"
            )
        if not config.HasField("dynamic_batching"):
            return cls(
                max_batch_size=config.max_batch_size,
                dynamic=False,
                max_queue_size=default_max_queue_size,
            )
        db = config.dynamic_batching
        if config.max_batch_size <= 0:
            raise ConfigError(
                "dynamic_batching needs max_batch_size > 0; set max_batch_size or remove "
                "dynamic_batching"
            )
        preferred = tuple(sorted(int(s) for s in db.preferred_batch_size))
        too_big = [s for s in preferred if s > config.max_batch_size or s < 1]
        if too_big:
            raise ConfigError(
                f"dynamic_batching.preferred_batch_size {too_big} must lie in "
                f"1..max_batch_size ({config.max_batch_size})"
            )
        if db.max_queue_delay_microseconds > MAX_QUEUE_DELAY_US:
            raise ConfigError(
                f"dynamic_batching.max_queue_delay_microseconds {db.max_queue_delay_microseconds}"
                f" would hold a request for more than a minute: use at most {MAX_QUEUE_DELAY_US}"
            )
        queue = db.default_queue_policy
        return cls(
            max_batch_size=config.max_batch_size,
            dynamic=True,
            preferred_batch_sizes=preferred,
            max_queue_delay_us=int(db.max_queue_delay_microseconds),
            max_queue_size=int(queue.max_queue_size) or default_max_queue_size,
            default_timeout_us=int(queue.default_timeout_microseconds),
            allow_timeout_override=bool(queue.allow_timeout_override)
            or not queue.default_timeout_microseconds,
        )
