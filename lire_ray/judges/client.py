"""The judge client: bounded concurrency, retries with backoff, a disk cache, strict failure.

One request = one chat conversation (a list of ``{role, content}`` messages) whose answer is the
judge's raw text. :class:`JudgeClient` sends the requests a cache does not already hold:

- with at most ``judge.concurrency`` in flight (a thread pool; the vLLM-actor transport takes
  them in batches instead);
- retrying HTTP 429, 5xx, timeouts, broken connections and answers that are not the API's JSON
  ``judge.max_retries`` times, waiting ``backoff_s``, 2x, 4x, ... (capped at 60 s); an HTTP 4xx
  other than 429 (the request itself is wrong) is not retried. After the last attempt the item
  is recorded as failed (``Answer.text`` None, ``Answer.error`` the cause) and the others go on;
- stopping with :class:`JudgeUnavailable` (naming the judge and its URL) when
  ``judge.abort_after`` requests failed before any succeeded, or every request failed (an
  answer taken from the cache counts as a success).

Answers the judge gave are cached on disk (:class:`JudgeCache`) by (judge model, template,
question, answers), each in its own file written atomically, so a rerun or a resumed run never
asks twice; failed items are never cached. An answer that is not in the verdict format is
still the judge's answer (asked again at the same settings it would answer alike): it is cached
and counted invalid by the caller.

The API key is read from the environment variable ``judge.api_key_env`` when a transport is
built, kept in memory only, and never appears in errors, logs, the cache or reports. Only the
standard library is used (``urllib``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lire_ray.atomic import atomic_write_text
from lire_ray.config.judge import JudgeConfig
from lire_ray.errors import ConfigError, LireError

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
Messages = list[dict[str, str]]


class JudgeUnavailable(LireError):
    """The judge answered none of the requests (down, wrong URL or model, bad key)."""


class RetryableError(Exception):
    """One failed attempt worth retrying (429, 5xx, timeout, broken answer)."""


class RequestRefused(Exception):
    """The server refused the request itself (HTTP 4xx other than 429): not retried."""


class Transport(Protocol):
    """Sends one judge request and returns the judge's raw text."""

    where: str

    def complete(self, messages: Messages) -> str:
        """Raises RetryableError or RequestRefused on failure."""


@dataclass(frozen=True)
class Answer:
    """The judge's answer to one request.

    Attributes:
        text: The raw text, or None when the request failed after its retries.
        error: Why it failed (None when answered).
        cached: Taken from the disk cache without asking.
        attempts: HTTP attempts made for it (0 when cached).
    """

    text: str | None
    error: str | None = None
    cached: bool = False
    attempts: int = 0


def cache_key(model: str, template: str, question: Any, answers: Sequence[str]) -> str:
    """The cache key of one judgment: a hash of the judge model, the full prompt template
    (system message included), the question (any JSON value: text, turns, reference) and the
    answers shown, in order."""
    blob = json.dumps({"model": model, "template": template, "question": question,
                       "answers": list(answers)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    """Judge answers on disk, one JSON file per key (``<dir>/<key[:2]>/<key>.json``).

    Args:
        root: The cache directory (created on first write).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached answer text, or None. A file that does not parse counts as absent."""
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        text = data.get("text") if isinstance(data, dict) else None
        return text if isinstance(text, str) else None

    def put(self, key: str, text: str, *, model: str) -> None:
        """Store an answer the judge gave (never a failure)."""
        atomic_write_text(self._path(key), json.dumps({"model": model, "text": text},
                                                      ensure_ascii=False))

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.is_dir() else 0


class OpenAITransport:
    """POST ``{base_url}/chat/completions`` of an OpenAI-compatible server.

    Args:
        cfg: The ``judge`` section (``base_url``, ``model``, ``api_key_env``, ``timeout_s``,
            ``max_tokens``, ``temperature``).

    Raises:
        ConfigError: No base_url or model, or ``api_key_env`` names an unset variable.
    """

    def __init__(self, cfg: JudgeConfig):
        if not cfg.base_url or not cfg.model:
            raise ConfigError("judge: backend 'openai' needs judge.base_url and judge.model")
        self.cfg = cfg
        self.where = cfg.base_url
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._key: str | None = None
        if cfg.api_key_env:
            self._key = os.environ.get(cfg.api_key_env)
            if not self._key:
                raise ConfigError(f"judge.api_key_env names {cfg.api_key_env}, which is not "
                                  "set in this environment")

    def complete(self, messages: Messages, *, max_tokens: int | None = None) -> str:
        body = json.dumps({"model": self.cfg.model, "messages": messages,
                           "max_tokens": max_tokens or self.cfg.max_tokens,
                           "temperature": self.cfg.temperature}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _excerpt(exc)
            if exc.code == 429 or exc.code >= 500:
                raise RetryableError(f"HTTP {exc.code} {exc.reason}{detail}") from None
            raise RequestRefused(f"HTTP {exc.code} {exc.reason}{detail}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise RetryableError(f"timed out after {self.cfg.timeout_s:g} s") from None
            raise RetryableError(f"cannot connect: {exc.reason}") from None
        except TimeoutError:
            raise RetryableError(f"timed out after {self.cfg.timeout_s:g} s") from None
        except (http.client.HTTPException, OSError) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from None
        return _content(raw)


def _content(raw: bytes) -> str:
    """The message text of a chat-completions answer; anything else is a broken answer."""
    try:
        data = json.loads(raw.decode("utf-8"))
        text = data["choices"][0]["message"]["content"]
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError):
        raise RetryableError(f"the answer is not chat-completions JSON: {raw[:120]!r}") from None
    if not isinstance(text, str):
        raise RetryableError(f"the answer's message content is {type(text).__name__}, not text")
    return text


def _excerpt(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(200).decode("utf-8", "replace").strip()
    except Exception:  # the body only decorates the message; never mask the HTTP error
        text = ""
    return f": {text}" if text else ""


@dataclass
class _Tally:
    """Outcomes of the requests sent in one :meth:`JudgeClient.judge_all` call."""

    answered: int = 0
    failed: int = 0
    last: str = ""


class JudgeClient:
    """Asks a judge many questions, with the cache, retries and failure rules of the module.

    Args:
        cfg: The ``judge`` section.
        transport: Sends one request (:class:`OpenAITransport` or the vLLM actor's).
        cache: The disk cache; None caches nothing.
        sleep: The wait between retries (tests pass a recorder).

    Attributes:
        stats: Counters: ``requests`` (attempts), ``retries``, ``answered``, ``failed``,
            ``cached``.
    """

    def __init__(self, cfg: JudgeConfig, transport: Transport, cache: JudgeCache | None, *,
                 sleep: Callable[[float], None] = time.sleep):
        self.cfg, self.transport, self.cache, self.sleep = cfg, transport, cache, sleep
        self.stats = {"requests": 0, "retries": 0, "answered": 0, "failed": 0, "cached": 0}
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"judge '{self.cfg.model}' at {self.transport.where}"

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def ask(self, messages: Messages) -> Answer:
        """One request with its retries; failures come back as an :class:`Answer` with
        ``text`` None."""
        attempts, cause = self.cfg.max_retries + 1, ""
        for attempt in range(attempts):
            if attempt:
                self._count("retries")
                self.sleep(min(self.cfg.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
            self._count("requests")
            try:
                return Answer(self.transport.complete(messages), attempts=attempt + 1)
            except RetryableError as exc:
                cause = str(exc)
            except RequestRefused as exc:
                return Answer(None, f"refused: {exc}", attempts=attempt + 1)
        return Answer(None, f"no answer after {attempts} attempt(s): {cause}", attempts=attempts)

    def check(self) -> None:
        """Ask the judge one short question first, so that a judge that is down, misnamed or
        refuses the key stops a job before it spends time generating answers.

        Raises:
            JudgeUnavailable: No answer after the retries.
        """
        answer = self.ask([{"role": "user", "content": "Reply with the word ready."}])
        if answer.text is None:
            raise JudgeUnavailable(f"{self.label} does not answer: {answer.error}")

    def judge_all(self, requests: Sequence[tuple[str, Messages]]) -> list[Answer]:
        """Answers to every ``(cache key, messages)`` request, in order.

        Raises:
            JudgeUnavailable: ``abort_after`` requests failed before any was answered, or
                every request failed.
        """
        out: list[Answer | None] = [None] * len(requests)
        todo = []
        for i, (key, _) in enumerate(requests):
            text = self.cache.get(key) if self.cache is not None else None
            if text is not None:
                out[i] = Answer(text, cached=True)
            else:
                todo.append(i)
        self._count("cached", len(requests) - len(todo))
        if todo:
            log.info("%s: %d requests (%d cached), %d at a time", self.label, len(todo),
                     len(requests) - len(todo), self.cfg.concurrency)
        tally = _Tally()

        def settle(i: int, answer: Answer) -> None:
            out[i] = answer
            if answer.text is None:
                tally.failed += 1
                tally.last = answer.error or ""
                return
            tally.answered += 1
            if self.cache is not None:
                self.cache.put(requests[i][0], answer.text, model=str(self.cfg.model))

        # Cached answers count: a rerun whose only new requests are the ones that failed
        # before still reports the rest (a judge that is down is caught by check() first).
        cached = len(requests) - len(todo)

        def hopeless() -> bool:
            return (tally.answered + cached == 0
                    and tally.failed >= min(self.cfg.abort_after, len(todo)))

        batch = getattr(self.transport, "complete_many", None)
        try:
            if batch is not None and todo:
                # An in-cluster engine batches on its own; one call carries every request.
                self._count("requests", len(todo))
                try:
                    texts = batch([requests[i][1] for i in todo])
                    answers = [Answer(t, attempts=1) for t in texts]
                except LireError as exc:
                    answers = [Answer(None, str(exc), attempts=1)] * len(todo)
                for i, answer in zip(todo, answers, strict=True):
                    settle(i, answer)
                if hopeless():
                    raise JudgeUnavailable(f"{self.label} answered none of {len(todo)} "
                                           f"requests; last error: {tally.last}")
            elif todo:
                self._ask_pooled(requests, todo, settle, hopeless, tally)
        finally:
            self._count("answered", tally.answered)
            self._count("failed", tally.failed)
        return [a for a in out if a is not None]

    def _ask_pooled(self, requests: Sequence[tuple[str, Messages]], todo: list[int],
                    settle: Callable[[int, Answer], None], hopeless: Callable[[], bool],
                    tally: _Tally) -> None:
        # A sliding window: a request is sent only when one of the ``concurrency`` in flight
        # has come back, so a judge found to be down stops the job after at most
        # ``abort_after + concurrency - 1`` requests.
        queue = list(todo)
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            pending: dict[Future, int] = {}
            while queue or pending:
                while queue and len(pending) < self.cfg.concurrency:
                    i = queue.pop(0)
                    pending[pool.submit(self.ask, requests[i][1])] = i
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    settle(pending.pop(fut), fut.result())
                if hopeless():
                    raise JudgeUnavailable(f"{self.label} answered none of the first "
                                           f"{tally.failed} requests; last error: "
                                           f"{tally.last}")
