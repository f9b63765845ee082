"""The status & control API and dashboard of a runs folder, as a FastAPI app.

The app keeps no state of its own: every request reads the run folders through
`rlvr.run` (status, metrics, samples), and a control request is a file the driver picks up. So one
app serves live and finished runs alike, in the driver's process or in a
separate `rlvr serve`.

Access (`rlvr.service.access`): every request's Host must be on the allow-list (400
otherwise, against DNS rebinding). Reads are open on a loopback bind (127.0.0.1, the
default); on any other address they need the token too unless `service.public_read`.
Control needs `Authorization: Bearer <token>`. A server started without a token
refuses control with 403 instead of accepting anyone; a wrong or missing token
is 401 and writes nothing; a run that is not active (completed, failed,
stopped, stale, unknown) is 409.

Metrics are read incrementally (`rlvr.run.metrics.MetricsCache`, one per app): a poll
parses only the rows appended since the last one, and at most `METRICS_ROWS` rows are
kept per run (older ones thinned: `thinned_before` in the answer).
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from rlvr import __version__
from rlvr.run import status
from rlvr.run.control import ACTIONS, request_control
from rlvr.run.metrics import MetricsCache, metrics_thinned_before, read_metrics
from rlvr.run.samples import read_samples
from rlvr.service.access import LOOPBACK_NAMES, AccessGuard, token_matches
from rlvr.service.prometheus import CONTENT_TYPE, exposition

METRICS_ROWS = 10_000  # per run, in the app's metrics cache
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

NO_TOKEN_MESSAGE = ("control is disabled: this server has no token. Set the environment variable "
                    "RLVR_TOKEN (or the recipe's service.token_env) or service.token_file "
                    "(`rlvr serve --token-file F`) and restart the server")


def _run_dir(runs_dir: str, run: str) -> str:
    try:
        return status.resolve_run(runs_dir, run)
    except status.RunNotFound:
        raise HTTPException(404, f"no run named {run!r}") from None


def _check_token(expected: str | None, authorization: str | None) -> None:
    if expected is None:
        raise HTTPException(403, NO_TOKEN_MESSAGE)
    if not token_matches(expected, authorization):
        raise HTTPException(401, "missing or wrong token: send `Authorization: Bearer <token>`",
                            headers={"WWW-Authenticate": "Bearer"})


def _add_control_route(app: FastAPI, runs_dir: str, token: str | None, action: str) -> None:
    @app.post(f"/api/v1/runs/{{run}}/{action}", status_code=202, name=f"{action}_run",
              summary=f"ask an active run to {action} (needs the bearer token)", tags=["control"])
    def control(run: str, authorization: str | None = Header(default=None)) -> dict:
        _check_token(token, authorization)
        run_dir = _run_dir(runs_dir, run)
        state = status.read_status(run_dir)["state"]
        if state not in status.ACTIVE_STATES:
            raise HTTPException(409, f"run {run!r} is {state}; only pending, running or paused runs take {action}")
        try:
            request = request_control(run_dir, action)
        except OSError as e:  # the run folder's control/ is not a writable folder: the run cannot be asked
            raise HTTPException(409, f"run {run!r}: cannot write the control request ({type(e).__name__})") from None
        return {"accepted": action, "id": request["id"], "requested_at": request["requested_at"]}


def _add_read_routes(app: FastAPI, runs_dir: str, token: str | None, reads_need_token: bool) -> None:
    cache = MetricsCache(max_rows=METRICS_ROWS)

    @app.get("/api/v1/runs", tags=["runs"])
    def runs() -> dict:
        return {"runs_dir": os.path.abspath(runs_dir), "runs": status.list_runs(runs_dir),
                "control": token is not None, "reads_need_token": reads_need_token}

    @app.get("/api/v1/runs/{run}", tags=["runs"])
    def run_detail(run: str) -> JSONResponse:
        return JSONResponse(status.read_status(_run_dir(runs_dir, run)))

    @app.get("/api/v1/runs/{run}/metrics", tags=["runs"])
    def metrics(run: str, since: int | None = Query(default=None, description="only rows with step > since")
                ) -> JSONResponse:
        run_dir = _run_dir(runs_dir, run)
        rows = read_metrics(run_dir, since, cache=cache)  # already JSON-ready: no re-encoding of every row
        return JSONResponse({"run": run, "since": since, "metrics": rows,
                             "thinned_before": metrics_thinned_before(run_dir, cache)})

    @app.get("/api/v1/runs/{run}/samples", tags=["runs"])
    def samples(run: str, step: int | None = Query(default=None, description="default: the latest step"),
                limit: int = Query(default=50, ge=1, le=10000)) -> dict:
        out = read_samples(_run_dir(runs_dir, run), step, limit)
        if step is not None and step not in out["steps"]:
            raise HTTPException(404, f"run {run!r} has no samples for step {step}")
        return {"run": run, **out}


def create_app(runs_dir: str, token: str | None, reads_need_token: bool = False,
               allowed_hosts: frozenset[str] = frozenset(LOOPBACK_NAMES)) -> FastAPI:
    """The app over every run in `runs_dir`; `token` (None: control disabled) guards control,
    and every other path but health, dashboard page and API description when `reads_need_token`;
    only requests whose Host is in `allowed_hosts` ("*": any) are answered."""
    app = FastAPI(title="rlvr runs", version=__version__,
                  description="Status, metrics, samples and control of rlvr training runs.")
    app.add_middleware(AccessGuard, allowed_hosts=allowed_hosts, token=token, reads_need_token=reads_need_token)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        return {"ok": True}

    _add_read_routes(app, runs_dir, token, reads_need_token)
    for action in ACTIONS:
        _add_control_route(app, runs_dir, token, action)

    @app.get("/metrics", tags=["service"], response_class=Response)
    def prometheus() -> Response:
        statuses = []
        for row in status.list_runs(runs_dir):
            if row["state"] in ("running", "paused"):
                row = status.read_status(os.path.join(runs_dir, row["run"]))
            statuses.append(row)
        states = [*status.WRITTEN_STATES, *status.READER_STATES]
        return Response(exposition(statuses, states), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
