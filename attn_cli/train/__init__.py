"""Training: the Trainer (the loop) and its task units, the run setup, optimizer and schedule,
and torchrun/DDP. Imports infer, eval, data, model and the top level."""
