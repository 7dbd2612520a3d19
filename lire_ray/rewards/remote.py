"""Remote reward models (``kind: remote``) speaking OpenRLHF's ``serve_rm`` protocol.

Protocol (OpenRLHF ``openrlhf/cli/serve_rm.py`` and its client
``openrlhf/utils/remote_rm_utils.py``): one HTTP ``POST`` to the configured ``url`` (e.g.
``http://host:5000/get_reward``) per batch of ``batch_size`` pairs, with the JSON body::

    {"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [label, ...]}

and the answer ``{"rewards": [float, ...]}``, one number per query, in order (other keys of the
answer are ignored). ``query`` is the plain concatenation of the prompt text and the response;
the server applies whatever template its model needs. ``labels`` carries each pair's reference
``answer`` from its metadata (a string as is, another JSON value JSON-encoded) and ``""`` where
there is none, as OpenRLHF's label column does for verifiable rewards.

Failures: a connection error, a timeout (``timeout_s`` per blocking socket operation) or an HTTP
5xx is retried up to ``max_retries`` times after waiting 0.5 s, 1 s, 2 s, ... (capped at 30 s);
an HTTP 4xx (the request itself is wrong) is not retried. Giving up raises
:class:`~lire_ray.errors.ModelLoadError` naming the reward model, the URL, the attempts and the
last status or cause. An answer that is not JSON, lacks ``rewards``, has the wrong length or a
value that is not a finite number raises :class:`~lire_ray.errors.DataError` naming the URL.
Only the standard library is used (``urllib``).
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from lire_ray.config import RewardModelConfig
from lire_ray.errors import DataError, ModelLoadError
from lire_ray.rewards.pairs import Pairs

#: First wait before a retry, in seconds; it doubles with every retry up to :data:`MAX_BACKOFF_S`.
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


class _Retryable(Exception):
    """One failed attempt worth retrying; the message is the cause shown when giving up."""


def _label(meta: dict[str, Any]) -> str:
    answer = meta.get("answer")
    if answer is None:
        return ""
    return answer if isinstance(answer, str) else json.dumps(answer)


class RemoteRewardModel:
    """A reward model behind an HTTP endpoint (``kind: remote``).

    Args:
        cfg: The recipe entry (``url``, ``batch_size``, ``timeout_s``, ``max_retries``).
        backoff_s: First wait before a retry (doubles each time).
        sleep: The wait function (tests pass a recorder).

    Attributes:
        requests: HTTP attempts made so far (retries included).
        retries: Attempts that were retries of a failed one.
    """

    def __init__(self, cfg: RewardModelConfig, *, backoff_s: float = BACKOFF_S,
                 sleep: Callable[[float], None] = time.sleep):
        assert cfg.url is not None, "RewardModelConfig requires url for kind 'remote'"
        self.cfg = cfg
        self.url = cfg.url
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.requests = 0
        self.retries = 0

    def score_pairs(self, pairs: Pairs) -> list[float]:
        """Scores of every pair, ``batch_size`` pairs per request.

        Raises:
            ModelLoadError: The server did not answer after the retries, or refused a request
                (HTTP 4xx).
            DataError: An answer is malformed.
        """
        scores: list[float] = []
        for start in range(0, len(pairs), self.cfg.batch_size):
            batch = pairs.slice(start, start + self.cfg.batch_size)
            payload = {"query": [p + r for p, r in zip(batch.prompts, batch.responses)],
                       "prompts": list(batch.prompts),
                       "labels": [_label(m) for m in batch.metadata]}
            scores.extend(self._checked(self._post(payload), len(batch)))
        return scores

    def _post(self, payload: dict) -> Any:
        body = json.dumps(payload).encode("utf-8")
        attempts = self.cfg.max_retries + 1
        cause = ""
        for attempt in range(attempts):
            if attempt:
                self.retries += 1
                self.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
            self.requests += 1
            try:
                return self._attempt(body)
            except _Retryable as exc:
                cause = str(exc)
        raise ModelLoadError(f"remote reward model '{self.cfg.name}': no answer from {self.url} "
                             f"after {attempts} attempt(s) ({self.cfg.max_retries} retries); "
                             f"last error: {cause}")

    def _attempt(self, body: bytes) -> Any:
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _body_excerpt(exc)
            if exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code} {exc.reason}{detail}") from None
            raise ModelLoadError(
                f"remote reward model '{self.cfg.name}': {self.url} refused the request with "
                f"HTTP {exc.code} {exc.reason}{detail} (not retried: the request itself is "
                "wrong for this server)") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"timed out after {self.cfg.timeout_s} s") from None
            raise _Retryable(f"cannot connect: {reason}") from None
        except TimeoutError:  # socket.timeout while reading the answer
            raise _Retryable(f"timed out after {self.cfg.timeout_s} s") from None
        except (http.client.HTTPException, OSError) as exc:  # reset, closed early, ...
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise DataError(f"the answer is not JSON: {raw[:200]!r}",
                            source=f"remote reward model '{self.cfg.name}' at {self.url}") from None

    def _checked(self, answer: Any, n: int) -> list[float]:
        source = f"remote reward model '{self.cfg.name}' at {self.url}"
        if not isinstance(answer, dict) or not isinstance(answer.get("rewards"), list):
            raise DataError(f"expected a JSON object with a 'rewards' list, got "
                            f"{str(answer)[:200]}", source=source)
        rewards = answer["rewards"]
        if len(rewards) != n:
            raise DataError(f"returned {len(rewards)} rewards for {n} queries", source=source)
        out = []
        for i, value in enumerate(rewards):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise DataError(f"reward {i} is {value!r}, not a finite number", source=source)
            out.append(float(value))
        return out


def _body_excerpt(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(300).decode("utf-8", "replace").strip()
    except Exception:  # the body is only for the message; never mask the HTTP error
        text = ""
    return f": {text}" if text else ""
