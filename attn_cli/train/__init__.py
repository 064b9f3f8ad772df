"""Training: the Trainer (``trainer``, the loop) and its task units (``units``: seq2seq and
classification; ``pretrain``: masked LM and denoising), its batches (``feed``), resume state
(``state``) and bookkeeping (``progress``); the run setup (``setup``) and its records
(``records``: metrics.jsonl, the model card); optimizer and schedule (``optim``) and
torchrun/DDP (``distributed``). Imports infer, eval, data, model and the top level."""
