"""The run folder, written by the driver and read by the status service, `rlvr status` and
`rlvr plot`: status.json (`status`), metrics.jsonl (`metrics`), samples/ (`samples`),
control requests (`control`), checkpoints (`checkpoint`), the metrics sinks (`sinks`), charts
(`plots`), the console (`console`), one call per step that writes them (`reporter`), and the
atomic writes and tolerant reader they all use (`files`)."""
