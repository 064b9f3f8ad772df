"""From a run directory to outputs: loading a run, batched generation and classification,
pure decoding functions, attention views, and the engines behind --engine (torch, CTranslate2)
with the CTranslate2 export. Imports data, model, eval and the top level."""
