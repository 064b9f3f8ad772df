"""`attn serve`: an HTTP API over trained runs, with batching across requests, and a web page
that shows the attention.

Modules: ``config`` (ServeConfig, --model parsing), ``batcher`` (the per-model queue and
worker, pure of HTTP), ``runner`` (a model's engine and its batch function), ``schemas``
(request bodies, limits, errors), ``telemetry`` (Prometheus), ``middleware`` (key, body, log),
``app`` (the FastAPI factory ``create_app``), ``server`` (uvicorn, signals, start-up lines) and
``static/`` (the page). Importing this package loads neither torch nor FastAPI.
"""
