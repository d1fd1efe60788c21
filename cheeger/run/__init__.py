"""The machinery of a run around the model: callbacks, checkpoints, loggers, schedules,
config checks, devices, reports, the multirun summary and the names a run logs under."""
