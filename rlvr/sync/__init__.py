"""Weight sync, trainer rank 0 -> every engine: `group.WeightSync` (setup, push, verify,
recovery), the transports behind `transport.TRANSPORTS` (broadcast, ipc, disk), buckets and
checksums (`tensors`), and the engine's end (`engine.WeightSyncMixin`)."""
