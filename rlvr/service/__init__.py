"""The run status & control service: a FastAPI app over a runs folder, and its dashboard.

    rlvr.service.app         create_app(runs_dir, token): the API (+ /metrics, + the dashboard at /)
    rlvr.service.server      start_in_thread / serve_forever / start_for_run / resolve_token
    rlvr.service.access      who may ask: the Host allow-list and the token for reads (stdlib only)
    rlvr.service.prometheus  the /metrics text, pure
    rlvr.service.static/     the dashboard: plain HTML, CSS and JS, no external URLs

This file imports nothing, so `import rlvr.service.prometheus` stays cheap;
fastapi and uvicorn are imported by `app` and `server` only.
"""
