"""A small HTTP server for an exported classifier: `sftlib serve --model EXPORT_DIR`.

    POST /predict  {"texts": ["...", ...]}  ->  {"predictions": [{"text", "label", "score",
                   "probabilities": {label: p}}, ...]}  (the rows of `Predictor.predict`)
    GET  /health   ->  {"status": "ok", "model", "backend", "labels", "limits", "served"}

FastAPI + uvicorn: the request schema, its validation and the JSON errors come from FastAPI;
the server, keep-alive and connection limits from uvicorn. Written here: the limits on the body
(`BodySizeLimit`, which neither provides), error bodies that never echo the request back (a
rejected 1 MB text would otherwise come back in FastAPI's 422), and micro-batching.

Micro-batching (`MicroBatcher`): requests that arrive while the model is busy, or within
`max_wait_s` of the first, are run as one `Predictor` call (up to about `max_batch_texts`
texts), so concurrent clients share batches instead of queueing one forward pass each. The
model runs on one worker thread, one batch at a time; the event loop keeps accepting requests
meanwhile. Answers equal `Predictor.predict` for the same texts (up to float rounding: a text
may be padded with different neighbours).

Limits (`ServeLimits`), each refused with a 4xx and a one-line message in {"error": ...}: body
size (413), malformed JSON or wrong shape (422), no texts, too many texts, an empty or too long
text (422); unknown paths 404, wrong methods 405. `--max-concurrency` (uvicorn) answers 503 past
that many open connections.

Binds to 127.0.0.1 by default: there is no authentication and no TLS; put a reverse proxy in
front before binding to another address. Not supported: streaming, several models per server,
GPU batching policies, hot reload of the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from sftlib.deploy import Predictor

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServeLimits:
    """What one request may hold; the defaults fit short texts such as reviews or tickets."""

    max_body_bytes: int = 1_000_000  # the JSON body as sent
    max_texts: int = 64  # per request: a larger job is several requests, or `sftlib predict`
    max_text_chars: int = 10_000  # the model reads max_length tokens; this bounds tokenizing
    max_batch_texts: int = 64  # texts of concurrent requests run as one model call (about)
    max_wait_s: float = 0.005  # how long the first request waits for others to join it

    def __post_init__(self) -> None:
        bad = [f"{key} {value}" for key, value in asdict(self).items() if not value > 0]
        if bad:
            raise ValueError(f"serve limits must be positive: {', '.join(bad)}")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled key is an error, not ignored
    texts: list[str]


class RequestRefused(Exception):
    """A request that breaks a limit: its HTTP status and the one line that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def check_texts(texts: list[str], limits: ServeLimits) -> None:
    """Refuse (422) no texts, too many, and empty or too long ones, naming the first."""
    if not texts:
        raise RequestRefused(422, "texts: give at least one text")
    if len(texts) > limits.max_texts:
        raise RequestRefused(422, f"texts: {len(texts)} texts, at most {limits.max_texts} per "
                             "request")
    for index, text in enumerate(texts):
        if not text.strip():
            raise RequestRefused(422, f"texts[{index}]: empty or whitespace only")
        if len(text) > limits.max_text_chars:
            raise RequestRefused(422, f"texts[{index}]: {len(text)} characters, at most "
                                 f"{limits.max_text_chars}")


class MicroBatcher:
    """Runs the texts of concurrent requests through `predict` together (module docstring).

    `predict` takes a list of texts and returns one row per text, in order. Start and stop it
    inside the event loop that calls `submit` (the app's lifespan does).
    """

    def __init__(self, predict: Callable[[list[str]], list[Any]], max_batch_texts: int,
                 max_wait_s: float) -> None:
        self.predict, self.max_batch_texts, self.max_wait_s = predict, max_batch_texts, max_wait_s
        self.counts = {"requests": 0, "texts": 0, "model_calls": 0}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        # one thread: one batch at a time on the model, and the tokenizer never shared
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sftlib-model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._serve_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[Any]:
        """The rows for `texts`, computed in a batch with whatever else is waiting."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _serve_forever(self) -> None:
        while True:
            await self._run(await self._collect())

    async def _collect(self) -> list[tuple[list[str], asyncio.Future]]:
        """The next batch: the first waiting request, and those that join it before the
        deadline or the text budget runs out."""
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while sum(len(texts) for texts, _ in batch) < self.max_batch_texts:
            try:
                batch.append(self._queue.get_nowait())  # already waiting: no timer needed
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        texts = [text for request_texts, _ in batch for text in request_texts]
        self.counts["requests"] += len(batch)
        self.counts["texts"] += len(texts)
        self.counts["model_calls"] += 1
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self._executor, self.predict,
                                                                    texts)
        except Exception as error:  # the requests get the error (500); the server goes on
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for request_texts, future in batch:
            if not future.done():  # a client that went away cancelled its future
                future.set_result(rows[start:start + len(request_texts)])
            start += len(request_texts)


class BodySizeLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413, by its Content-Length
    when it states one, else by counting the bytes as they arrive (chunked uploads).

    The body is read here, up to the limit, and handed on whole: an error raised from inside the
    app's own body reading would reach the client as FastAPI's generic 400."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:
            await self._refuse(scope, receive, send)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:  # after the body: wait for the client to disconnect, as ASGI does
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, scope, receive, send) -> None:
        message = f"request body over {self.max_bytes:,} bytes"
        await JSONResponse({"error": message}, status_code=413)(scope, receive, send)


def create_app(predictor: Predictor, limits: ServeLimits | None = None) -> FastAPI:
    """The FastAPI app serving `predictor` (module docstring: routes, limits, batching)."""
    limits = limits or ServeLimits()
    batcher = MicroBatcher(predictor.predict, limits.max_batch_texts, limits.max_wait_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="sftlib classifier", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestRefused)
    async def refused(_request: Request, error: RequestRefused) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        # 404 / 405 with the same {"error": ...} body as every other refusal
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(error)}, status_code=422)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": str(predictor.folder), "backend": predictor.describe(),
                "labels": predictor.labels, "limits": asdict(limits), "served": batcher.counts}

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict[str, Any]:
        check_texts(request.texts, limits)
        return {"predictions": await batcher.submit(request.texts)}

    return app


def validation_message(error: RequestValidationError) -> str:
    """FastAPI's first validation error as one line, without the input it echoes back."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    if first.get("type") == "json_invalid":
        return "body: not valid JSON; send {\"texts\": [\"...\"]}"
    return f"{where}: {first.get('msg', 'invalid')}; send {{\"texts\": [\"...\"]}}"


def request_json(url: str, body: Any = None, method: str | None = None,
                 timeout_s: float = 60.0) -> tuple[int, Any]:
    """A client for trying the server (standard library only): send `body` as JSON (bytes as
    they are; POST when there is a body, else GET) and return (status, decoded JSON answer),
    4xx and 5xx answers included."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"},
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def free_socket(host: str = DEFAULT_HOST) -> socket.socket:
    """A socket bound to a port the system chose, for a server to listen on (no race between
    finding a free port and binding it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.contextmanager
def running_server(app: FastAPI, host: str = DEFAULT_HOST,
                   start_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve `app` on a free port of `host` in a background thread; yields its base URL
    ("http://127.0.0.1:PORT") and stops the server on exit. For tests and notebooks."""
    import uvicorn

    sock = free_socket(host)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout_s)
        sock.close()


def serve(predictor: Predictor, host: str = DEFAULT_HOST, port: int = 8000,
          limits: ServeLimits | None = None, max_concurrency: int = 128) -> None:
    """Run the server in the foreground until interrupted (`sftlib serve`)."""
    import uvicorn

    uvicorn.run(create_app(predictor, limits), host=host, port=port,
                limit_concurrency=max_concurrency, log_level="info")
