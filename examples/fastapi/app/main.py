"""An app of the kind Breakwater is for: a webhook receiver and a small API in front of a
slow dependency, run by one uvicorn worker."""
import asyncio
import logging
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI(title="Breakwater example")
log = logging.getLogger("app")

# What the "slow dependency" costs per call; the demo raises it to show a timeout.
DEPENDENCY_DELAY = float(os.environ.get("DEPENDENCY_DELAY", "0.05"))
# Flipped by /api/admin/fail to show a breaker opening.
failing = {"on": False}


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.post("/api/v1/webhooks/{source}", status_code=202)
async def webhook(source: str, request: Request):
    payload = await request.body()
    # Breakwater sends X-Request-ID: log it, and one request can be followed end to end.
    log.info("webhook from %s, %d bytes, request %s", source, len(payload), request.headers.get("x-request-id"))
    return {"accepted": True, "source": source, "bytes": len(payload)}


@app.get("/api/items")
async def items():
    return {"items": [{"id": 1, "name": "anchor"}, {"id": 2, "name": "buoy"}]}


@app.get("/api/report")
async def report(delay: float | None = None):
    """Calls the slow dependency."""
    await asyncio.sleep(DEPENDENCY_DELAY if delay is None else delay)
    return {"report": "ready"}


@app.get("/api/flaky")
async def flaky():
    if failing["on"]:
        return JSONResponse({"error": "dependency down"}, status_code=500)
    return {"status": "fine"}


@app.post("/api/admin/fail")
async def set_failing(on: bool = True):
    failing["on"] = on
    return failing


@app.get("/api/pid")
async def pid():
    return {"pid": os.getpid()}
