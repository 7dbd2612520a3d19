"""Remote reward models against real HTTP servers on 127.0.0.1 (OpenRLHF serve_rm protocol)."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lire_ray.config import RewardModelConfig
from lire_ray.errors import DataError, ModelLoadError
from lire_ray.pool import PoolRow
from lire_ray.rewards import RemoteRewardModel, RewardSet
from lire_ray.rewards.pairs import Pairs


@contextmanager
def reward_server(answer):
    """Serve ``POST /get_reward``; ``answer(n, body)`` -> (status, payload or raw bytes), where
    n counts requests from 1. Yields (url, bodies received)."""
    bodies: list[dict] = []
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            status, payload = answer(len(bodies), body)
            if status is None:  # never answer (until the test ends)
                release.wait(30)
                return
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/get_reward", bodies
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def length_rewards(n, body):
    return 200, {"rewards": [float(len(q)) for q in body["query"]]}


def _remote(url, **kw):
    return RewardModelConfig(name="rm", kind="remote", url=url, **kw)


def _pairs(n):
    return Pairs.flat([f"P{i}:" for i in range(n)], ["r" * i for i in range(n)])


def test_remote_scores_in_batches_with_the_serve_rm_payload():
    with reward_server(length_rewards) as (url, bodies):
        rs = RewardSet([_remote(url, batch_size=2)])
        rows = [PoolRow(prompt_id="a", prompt="Q1 ", responses=["x", "yy", "zzz"],
                        sources=["human"] * 3, policy_version=[-1] * 3,
                        metadata=json.dumps({"answer": 42})),
                PoolRow(prompt_id="b", prompt="Q22 ", responses=["w", "vv"],
                        sources=["human"] * 2, policy_version=[-1] * 2,
                        metadata=json.dumps({"answer": "Paris"})),
                PoolRow(prompt_id="c", prompt="Q3 ", responses=["u"], sources=["human"],
                        policy_version=[-1])]
        out = rs.score_rows(rows)
    assert [r.rewards["rm"] for r in out] == [(4.0, 5.0, 6.0), (5.0, 6.0), (4.0,)]
    assert bodies == [
        {"query": ["Q1 x", "Q1 yy"], "prompts": ["Q1 ", "Q1 "], "labels": ["42", "42"]},
        {"query": ["Q1 zzz", "Q22 w"], "prompts": ["Q1 ", "Q22 "], "labels": ["42", "Paris"]},
        {"query": ["Q22 vv", "Q3 u"], "prompts": ["Q22 ", "Q3 "], "labels": ["Paris", ""]},
    ]


def test_remote_retries_5xx_with_exponential_backoff():
    def flaky(n, body):
        return (503, {"detail": "warming up"}) if n <= 2 else length_rewards(n, body)

    waits: list[float] = []
    with reward_server(flaky) as (url, bodies):
        rm = RemoteRewardModel(_remote(url, max_retries=3), sleep=waits.append)
        assert rm.score_pairs(_pairs(3)) == [3.0, 4.0, 5.0]
    assert (rm.requests, rm.retries, len(bodies)) == (3, 2, 3)
    assert waits == [0.5, 1.0]


def test_remote_gives_up_after_max_retries_naming_url_and_last_status():
    waits: list[float] = []
    with reward_server(lambda n, body: (502, b"bad gateway")) as (url, bodies):
        rm = RemoteRewardModel(_remote(url, max_retries=2), sleep=waits.append)
        with pytest.raises(ModelLoadError, match=rf"'rm'.*{url}.*3 attempt.*HTTP 502.*bad gateway"):
            rm.score_pairs(_pairs(1))
    assert len(bodies) == 3 and waits == [0.5, 1.0]


def test_remote_that_never_answers_times_out_in_bounded_time():
    with reward_server(lambda n, body: (None, None)) as (url, bodies):
        rm = RemoteRewardModel(_remote(url, timeout_s=0.3, max_retries=1), backoff_s=0.05)
        start = time.monotonic()
        with pytest.raises(ModelLoadError, match=rf"{url}.*2 attempt.*timed out after 0.3 s"):
            rm.score_pairs(_pairs(2))
        elapsed = time.monotonic() - start
    assert len(bodies) == 2
    assert 0.6 <= elapsed < 3.0  # two timeouts and one short wait, nowhere near the 30 s hang


def test_remote_4xx_is_not_retried():
    waits: list[float] = []
    with reward_server(lambda n, body: (400, {"detail": "no query"})) as (url, bodies):
        rm = RemoteRewardModel(_remote(url, max_retries=3), sleep=waits.append)
        with pytest.raises(ModelLoadError, match=rf"{url} refused.*HTTP 400.*no query"):
            rm.score_pairs(_pairs(1))
    assert len(bodies) == 1 and waits == [] and rm.retries == 0


def test_remote_connection_refused_is_retried_then_named():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/get_reward"
    waits: list[float] = []
    rm = RemoteRewardModel(_remote(url, max_retries=2), sleep=waits.append)
    with pytest.raises(ModelLoadError, match=rf"{url}.*3 attempt.*cannot connect"):
        rm.score_pairs(_pairs(1))
    assert rm.requests == 3 and waits == [0.5, 1.0]


@pytest.mark.parametrize("payload, needle", [
    ({"rewards": [1.0]}, r"returned 1 rewards for 2 queries"),
    ({"scores": [1.0, 2.0]}, r"'rewards' list"),
    ({"rewards": [1.0, "2"]}, r"reward 1 is '2', not a finite number"),
    (b'{"rewards": [1.0, NaN]}', r"reward 1 is nan"),
    (b"<html>oops</html>", r"not JSON"),
])
def test_remote_answer_is_validated(payload, needle):
    with reward_server(lambda n, body: (200, payload)) as (url, bodies):
        rs = RewardSet([_remote(url, max_retries=3)])
        with pytest.raises(DataError, match=rf"remote reward model 'rm' at {url}.*{needle}"):
            rs.score(["p", "q"], ["a", "b"])
    assert len(bodies) == 1  # a wrong answer is not retried


def test_no_pairs_send_no_request():
    with reward_server(length_rewards) as (url, bodies):
        assert RewardSet([_remote(url)]).score([], []) == {"rm": []}
    assert bodies == []
