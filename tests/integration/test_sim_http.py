"""The simulator over real HTTP: OpenAI shapes, the official client, prefix caching, metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from pcache.engines import parse_metrics
from pcache.testing.http import expect_status
from pcache.testing.sim import SimFleet

LONG_PROMPT = "You are a meticulous assistant. " * 250  # 8,000 characters = 2,000 tokens


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    # per-token prefill cost raised so a 2,000-token miss costs ~100 ms more than a hit
    # dev mode: these tests reset the prefix cache, which vLLM serves only with VLLM_SERVER_DEV_MODE=1
    with SimFleet(replicas=2, per_token_us=50, num_gpu_blocks=2048, extra_args=("--dev-mode",)) as running:
        yield running


@pytest.fixture
def client(fleet: SimFleet) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fleet.url('r1')}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def test_fleet_announces_every_replica_on_its_own_port(fleet: SimFleet) -> None:
    assert sorted(fleet.urls) == ["r1", "r2"]
    assert len({url for url in fleet.urls.values()}) == 2
    for url in fleet.urls.values():
        expect_status(httpx.get(f"{url}/health"), 200)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["sim-model"]


def test_openai_client_chat_completion(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "Say hello"}], max_tokens=5
    )
    assert response.object == "chat.completion"
    assert response.choices[0].finish_reason == "length"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content
    assert response.usage is not None
    assert response.usage.completion_tokens == 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + 5
    assert response.usage.prompt_tokens_details is not None
    assert response.usage.prompt_tokens_details.cached_tokens == 0


def test_openai_client_streamed_chat_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="sim-model",
        messages=[{"role": "user", "content": "Stream please"}],
        max_completion_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(text.split()) == 4
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_openai_client_completions_streamed_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="sim-model", prompt="Once upon a time", max_tokens=3)
    assert whole.object == "text_completion"
    assert whole.usage is not None and whole.usage.completion_tokens == 3
    parts = list(
        client.completions.create(model="sim-model", prompt="Once upon a time", max_tokens=3, stream=True)
    )
    assert "".join(part.choices[0].text for part in parts) == whole.choices[0].text


def test_raw_sse_ends_with_done(fleet: SimFleet) -> None:
    body = {"model": "sim-model", "prompt": "hi", "max_tokens": 2, "stream": True}
    with httpx.stream("POST", f"{fleet.url('r2')}/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: ") for event in events)
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_same_long_prompt_twice_is_cached_in_usage_metrics_and_ttft(fleet: SimFleet) -> None:
    url = fleet.url("r2")
    body = {"model": "sim-model", "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 1}
    before = parse_metrics(fleet.metrics("r2"))
    first = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).json()
    middle = parse_metrics(fleet.metrics("r2"))
    second = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).json()
    after = parse_metrics(fleet.metrics("r2"))
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert prompt_tokens > 2000
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == (prompt_tokens - 1) // 16 * 16
    assert after.prefix_hits is not None and middle.prefix_hits is not None
    assert after.prefix_hits - middle.prefix_hits == cached
    assert before.prefix_queries is not None and after.prefix_queries is not None
    assert after.prefix_queries - before.prefix_queries == 2 * prompt_tokens
    # server-side TTFT from the histogram's _sum: the miss pays ~2,000 x 50 µs, the hit almost nothing
    assert before.ttft_sum is not None and middle.ttft_sum is not None and after.ttft_sum is not None
    cold, warm = middle.ttft_sum - before.ttft_sum, after.ttft_sum - middle.ttft_sum
    assert cold > 0.09
    assert warm < cold / 3


def test_filling_the_cache_evicts_the_least_recently_used_prefix() -> None:
    # 40 blocks of 16 tokens; each prompt below is 10 full blocks (+1 decode block)
    prompts = {tag: f"[{tag}]" + tag * (640 - 3) for tag in "ABCD"}
    with SimFleet(replicas=1, num_gpu_blocks=40) as small:
        url = small.url("r1")

        def cached(tag: str) -> int:
            body = {"model": "sim-model", "prompt": prompts[tag] + " go", "max_tokens": 1}
            response = httpx.post(f"{url}/v1/completions", json=body, timeout=30).json()
            tokens: int = response["usage"]["prompt_tokens_details"]["cached_tokens"]
            return tokens

        for tag in "ABC":
            assert cached(tag) == 0
        assert cached("A") == 160  # A becomes the most recent; B is now the least recent
        assert cached("D") == 0  # 30 cached + 11 needed > 40: evicts from B
        assert cached("A") == 160
        assert cached("C") == 160
        assert cached("B") < 160


def test_reset_prefix_cache_forgets_cached_prefixes(fleet: SimFleet) -> None:
    url = fleet.url("r1")
    body = {"model": "sim-model", "prompt": "reset me " * 40, "max_tokens": 1}
    httpx.post(f"{url}/v1/completions", json=body)
    assert httpx.post(f"{url}/v1/completions", json=body).json()["usage"]["prompt_tokens_details"][
        "cached_tokens"
    ]
    expect_status(httpx.post(f"{url}/reset_prefix_cache"), 200)
    assert (
        httpx.post(f"{url}/v1/completions", json=body).json()["usage"]["prompt_tokens_details"][
            "cached_tokens"
        ]
        == 0
    )


def test_reset_prefix_cache_is_404_without_dev_mode_like_vllm() -> None:
    with SimFleet(replicas=1) as plain:
        response = httpx.post(f"{plain.url('r1')}/reset_prefix_cache")
    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/tokenize"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_post_not_declared_as_json_gets_vllms_400(
    fleet: SimFleet, path: str, content_type: str | None
) -> None:
    fields = {"model": "sim-model", "prompt": "hello", "max_tokens": 1}
    if path == "/v1/chat/completions":
        fields = {"model": "sim-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
    body = json.dumps(fields).encode()
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{fleet.url('r1')}{path}", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {
            "message": "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
            "type": "Bad Request",
            "param": None,
            "code": 400,
        }
    }
    declared = httpx.post(
        f"{fleet.url('r1')}{path}", content=body, headers={"content-type": "Application/JSON; charset=utf-8"}
    )
    assert declared.status_code == 200, declared.text


def test_idle_kv_usage_reads_zero_while_the_prefix_stays_cached(fleet: SimFleet) -> None:
    """vLLM counts only blocks held by running requests as used; freed cached blocks are not."""
    url = fleet.url("r2")
    body = {"model": "sim-model", "prompt": "keep me cached " * 60, "max_tokens": 1}
    httpx.post(f"{url}/v1/completions", json=body).raise_for_status()
    again = httpx.post(f"{url}/v1/completions", json=body).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    stats = parse_metrics(fleet.metrics("r2"))
    assert stats.kv_usage == 0.0 and stats.running == 0


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "sim-model"}', 400, "'messages' is required"),
        ("/v1/chat/completions", b'{"model": "sim-model", "messages": "hi"}', 400, "messages"),
        ("/v1/completions", b'{"model": "sim-model"}', 400, "'prompt' is required"),
        ("/v1/completions", b'{"model": "sim-model", "prompt": "x", "max_tokens": "9"}', 400, "max_tokens"),
        ("/v1/completions", b'{"model": "sim-model", "prompt": "x", "n": 2}', 400, "n=1"),
        (
            "/v1/completions",
            b'{"model": "sim-model", "prompt": "x", "stream_options": {}}',
            400,
            "stream=True",
        ),
        ("/v1/completions", b'{"model": "gpt-9", "prompt": "x"}', 404, "does not exist"),
    ],
)
def test_bad_requests_get_vllm_error_bodies(
    fleet: SimFleet, path: str, body: bytes, status: int, needle: str
) -> None:
    response = httpx.post(
        f"{fleet.url('r1')}{path}", content=body, headers={"content-type": "application/json"}
    )
    expect_status(response, status)
    error = response.json()["error"]
    assert needle in error["message"]
    assert error["code"] == status
    assert error["type"] == ("NotFoundError" if status == 404 else "BadRequestError")
    assert "param" in error


def test_openai_client_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="sim-model", prompt="x", max_tokens=10**6)


def test_running_and_kv_usage_show_in_flight_requests(fleet: SimFleet) -> None:
    url = fleet.url("r2")
    body = {"model": "sim-model", "prompt": "busy " * 100, "max_tokens": 400, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body) as response:
        lines = response.iter_lines()  # keep a reference: a discarded iterator closes the stream
        next(lines)
        stats = parse_metrics(fleet.metrics("r2"))
        assert stats.running == 1
        assert stats.kv_usage is not None and stats.kv_usage > 0
        assert sum(1 for line in lines if line) == 400  # 399 more tokens, then [DONE]
    idle = parse_metrics(fleet.metrics("r2"))
    assert (idle.running, idle.kv_usage) == (0, 0.0)


def test_client_disconnect_aborts_the_request(fleet: SimFleet) -> None:
    url = fleet.url("r1")
    before = parse_metrics(fleet.metrics("r1"))
    body = {"model": "sim-model", "prompt": "leaving early", "max_tokens": 1000, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body) as response:
        lines = response.iter_lines()
        next(lines)
    after = parse_metrics(fleet.metrics("r1"))
    for _ in range(100):
        if after.running == 0:
            break
        after = parse_metrics(fleet.metrics("r1"))
    assert after.running == 0
    assert before.generation_tokens is not None and after.generation_tokens is not None
    assert after.generation_tokens - before.generation_tokens < 1000
