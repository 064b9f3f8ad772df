"""SPECs to rows, rows to a task's examples, unlabelled text, the token cache (build, open,
check), --stream, batch plans from lengths, prefetch, SentencePiece and the pretraining noise.
Imports only the top level."""
