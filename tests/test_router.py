"""The model router: one test per rule, the privacy boundary, failover and health, observed latency,
hybrid draft + refine, and the decisions it emits.

Decision tests use small in-process providers (a ``.config`` and a ``chat``); failover, boundary
and hybrid tests use real ``LLMClient``\\ s against scripted OpenAI-compatible servers on 127.0.0.1
(and a port nothing listens on for "endpoint down").
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field

import pytest

from loom.cognitive.llm.client import LLMClient
from loom.cognitive.llm.router import (
    ModelRouter,
    Privacy,
    Route,
    RoutingRefused,
    RoutingRequest,
    estimate_tokens,
)
from loom.cognitive.llm.router_request import in_boundary
from loom.cognitive.llm.types import (
    LLMBadResponse,
    LLMConfig,
    LLMResponse,
    LLMTimeout,
    LLMUnavailable,
    Locality,
    Usage,
)
from loom.errors import UsageError
from tests.peers.scripted_openai import ScriptedOpenAI, error, text

ASK = [{"role": "user", "content": "What is 2 + 3?"}]


def cfg(name: str, locality: str, *, quality: float, latency: float, price: float = 0.0, **kw) -> LLMConfig:
    url = "http://127.0.0.1:9/v1" if locality == "local" else f"https://{name}.example/v1"
    return LLMConfig(
        name=name,
        base_url=url,
        api_key="k",
        model="m",
        locality=Locality(locality),
        quality=quality,
        expected_latency_ms=latency,
        cost_per_1k_input=price,
        cost_per_1k_output=price,
        **kw,
    )


@dataclass
class Fake:
    """A provider in this process: answers ``"<name> says hi"`` in ``latency_ms``, or raises what is queued."""

    config: LLMConfig
    latency_ms: float = 10.0
    script: list[BaseException | LLMResponse] = field(default_factory=list)
    calls: int = 0
    closed: bool = False

    async def chat(self, messages, *, tools=None, tool_choice=None, temperature=None, max_tokens=None,
                   on_token=None, timeout=None) -> LLMResponse:  # fmt: skip
        self.calls += 1
        item = self.script.pop(0) if self.script else None
        if isinstance(item, BaseException):
            raise item
        if item is not None:
            return item
        text = f"{self.config.name} says hi"
        if on_token is not None:
            on_token(text)
        return LLMResponse(text=text, usage=Usage(100, 20), latency_ms=self.latency_ms, provider=self.config.name)

    async def aclose(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fakes(*configs: LLMConfig) -> list[Fake]:
    return [Fake(c) for c in configs]


LOCAL = cfg("local", "local", quality=0.5, latency=100)
GOOD_LOCAL = cfg("local", "local", quality=0.9, latency=100)
CLOUD = cfg("cloud", "cloud", quality=0.95, latency=800, price=0.01)


# -- requests -----------------------------------------------------------------------------------


def test_request_validates_each_field_and_names_it():
    for kwargs, word in [
        ({"privacy": "secret"}, "privacy"),
        ({"latency_budget_ms": 0}, "latency_budget_ms"),
        ({"cost_cap": -1}, "cost_cap"),
        ({"quality_floor": 1.5}, "quality_floor"),
        ({"output_tokens": -3}, "output_tokens"),
        ({"latency_budget_ms": float("nan")}, "latency_budget_ms"),
    ]:
        with pytest.raises(UsageError, match=word):
            RoutingRequest(**kwargs)
    assert RoutingRequest(privacy="LOCAL_ONLY").privacy is Privacy.LOCAL_ONLY


def test_request_from_event_metadata_reads_strings_and_names_a_bad_key():
    req = RoutingRequest.from_metadata(
        {"privacy": "private", "latency_budget_ms": "250", "cost_cap": "0.02", "quality_floor": "0.7", "other": "x"}
    )
    assert req == RoutingRequest(privacy=Privacy.PRIVATE, latency_budget_ms=250, cost_cap=0.02, quality_floor=0.7)
    assert RoutingRequest.from_metadata({}, privacy="public").privacy is Privacy.PUBLIC
    with pytest.raises(UsageError, match="cost_cap"):
        RoutingRequest.from_metadata({"cost_cap": "cheap"})
    with pytest.raises(UsageError, match="privacy"):
        RoutingRequest.from_metadata({"privacy": "confidential"})


def test_router_refuses_duplicate_names_and_providers_without_config():
    with pytest.raises(UsageError, match="unique"):
        ModelRouter([Fake(LOCAL), Fake(GOOD_LOCAL)])
    with pytest.raises(UsageError, match="config"):
        ModelRouter([object()])
    with pytest.raises(UsageError, match="at least one"):
        ModelRouter([])


@pytest.mark.parametrize(
    ("privacy", "allowed"),
    [
        (Privacy.PUBLIC, {"local", "private", "cloud"}),
        (Privacy.SENSITIVE, {"local", "private", "cloud"}),
        (Privacy.PRIVATE, {"local", "private"}),
        (Privacy.LOCAL_ONLY, {"local"}),
    ],
)
def test_privacy_boundary_by_locality(privacy, allowed):
    assert {loc.value for loc in Locality if in_boundary(privacy, loc)} == allowed


# -- one test per rule --------------------------------------------------------------------------


async def test_rule1_drop_when_no_provider_is_inside_the_boundary():
    cloud = Fake(CLOUD)
    router = ModelRouter([cloud, Fake(cfg("vpc", "private", quality=0.9, latency=200))])
    d = router.decide(RoutingRequest(privacy="local-only"))
    assert (d.route, d.rule, d.provider, d.confidence) == (Route.DROP, 1, None, 0.0)
    assert "'local-only'" in d.reason and "'cloud' (cloud)" in d.reason and "'vpc' (private)" in d.reason
    with pytest.raises(RoutingRefused) as info:
        await router.chat(ASK, request=RoutingRequest(privacy="local-only"))
    assert info.value.decision.route is Route.DROP and not info.value.retryable
    assert cloud.calls == 0


def test_rule2_drop_when_every_provider_inside_exceeds_the_cost_cap():
    router = ModelRouter(fakes(CLOUD, cfg("cloud2", "cloud", quality=0.9, latency=500, price=0.005)))
    d = router.decide(RoutingRequest(cost_cap=0.0001, input_tokens=1000, output_tokens=0))
    assert (d.route, d.rule) == (Route.DROP, 2)
    assert "cost cap 0.0001" in d.reason and "cheapest: 'cloud2' at ~0.005" in d.reason


async def test_rule3_defer_when_every_provider_inside_is_unhealthy_says_when_one_returns():
    clock = Clock()
    local = Fake(GOOD_LOCAL, script=[LLMUnavailable("local", "connection refused")])
    router = ModelRouter([local, Fake(CLOUD)], clock=clock, unhealthy_for=30)
    with pytest.raises(LLMUnavailable):
        await router.chat(ASK, request=RoutingRequest(privacy="private"))
    clock.now += 10
    d = router.decide(RoutingRequest(privacy="private"))
    assert (d.route, d.rule, d.retry_after_s) == (Route.DEFER, 3, 20.0)
    assert "'local' is back in 20.0 s" in d.reason
    with pytest.raises(RoutingRefused) as info:
        await router.chat(ASK, request=RoutingRequest(privacy="private"))
    assert info.value.retryable and info.value.decision.route is Route.DEFER


def test_rule4_local_when_a_local_provider_meets_floor_and_budget():
    router = ModelRouter(fakes(GOOD_LOCAL, CLOUD))
    d = router.decide(RoutingRequest(quality_floor=0.8, latency_budget_ms=500))
    assert (d.route, d.rule, d.provider, d.fallbacks) == (Route.LOCAL, 4, "local", ("cloud",))
    assert d.reason == (
        "local provider 'local' meets the quality floor and the latency budget "
        "(quality 0.90 >= floor 0.80; ~100 ms configured <= budget 500 ms)"
    )
    assert d.confidence == pytest.approx(0.9) and d.est_latency_ms == 100 and d.est_cost == 0


def test_rule5_hybrid_when_local_meets_the_budget_and_only_a_cloud_meets_the_floor():
    router = ModelRouter(fakes(LOCAL, CLOUD))
    d = router.decide(RoutingRequest(quality_floor=0.8, latency_budget_ms=200, input_tokens=1000, output_tokens=1000))
    assert (d.route, d.rule, d.draft_provider, d.provider) == (Route.HYBRID, 5, "local", "cloud")
    assert "drafts within the budget" in d.reason and "refines the draft" in d.reason
    assert d.est_latency_ms == 900 and d.est_cost == pytest.approx(0.02)
    assert d.confidence == pytest.approx(0.95)


def test_rule6_tight_budget_goes_local_below_the_floor_and_says_so():
    weak_cloud = cfg("cloud", "cloud", quality=0.7, latency=800, price=0.01)
    router = ModelRouter(fakes(LOCAL, cfg("local2", "local", quality=0.6, latency=150), weak_cloud))
    d = router.decide(RoutingRequest(quality_floor=0.8, latency_budget_ms=200))
    assert (d.route, d.rule, d.provider) == (Route.LOCAL, 6, "local2")  # the best of those within the budget
    assert "excludes every cloud provider (fastest: 'cloud' ~800 ms configured)" in d.reason
    assert "below the quality floor (quality 0.60 < floor 0.80)" in d.reason


def test_rule7_local_fallback_when_every_cloud_exceeds_the_cost_cap():
    router = ModelRouter(fakes(LOCAL, CLOUD))
    d = router.decide(RoutingRequest(quality_floor=0.8, cost_cap=0.001, input_tokens=500))
    assert (d.route, d.rule, d.provider, d.fallbacks) == (Route.LOCAL_FALLBACK, 7, "local", ())
    assert d.reason == (
        "no cloud provider is usable ('cloud': est. cost 0.00756 > cap 0.001); "
        "falling back to local provider 'local' (quality 0.50 < floor 0.80)"
    )
    private = router.decide(RoutingRequest(privacy="private", quality_floor=0.8))
    assert private.route is Route.LOCAL_FALLBACK and "privacy 'private' excludes cloud providers" in private.reason


def test_rule8_cloud_best_quality_per_cost_then_fastest_then_highest_quality():
    pricey = cfg("pricey", "cloud", quality=0.97, latency=600, price=0.03)
    router = ModelRouter(fakes(LOCAL, CLOUD, pricey))
    d = router.decide(RoutingRequest(quality_floor=0.8, input_tokens=1000, output_tokens=1000))
    assert (d.route, d.rule, d.provider, d.fallbacks) == (Route.CLOUD, 8, "cloud", ("pricey", "local"))
    assert "best quality per cost" in d.reason
    cloud_only = ModelRouter(fakes(CLOUD, pricey))
    slow = cloud_only.decide(RoutingRequest(quality_floor=0.8, latency_budget_ms=100))
    assert (slow.route, slow.provider) == (Route.CLOUD, "pricey")
    assert "no provider meets the latency budget (100 ms)" in slow.reason and "fastest" in slow.reason
    low = cloud_only.decide(RoutingRequest(quality_floor=0.99))
    assert (low.route, low.provider) == (Route.CLOUD, "pricey") and "highest quality" in low.reason


def test_failover_order_stays_inside_the_boundary_and_sensitive_prefers_near():
    vpc = cfg("vpc", "private", quality=0.9, latency=300)
    router = ModelRouter(fakes(GOOD_LOCAL, CLOUD, vpc))
    private = router.decide(RoutingRequest(privacy="private", quality_floor=0.8))
    assert (private.provider, private.fallbacks) == ("local", ("vpc",))
    considered = {c["name"]: c for c in private.considered}
    assert considered["cloud"]["eligible"] is False
    assert considered["cloud"]["why_not"] == "privacy 'private' excludes cloud providers"
    # Same fit, different preference: public ranks by quality, sensitive tries local/private first.
    strong = cfg("cloud", "cloud", quality=0.99, latency=100)
    router = ModelRouter(fakes(GOOD_LOCAL, strong, vpc))
    assert router.decide(RoutingRequest(privacy="public")).fallbacks == ("cloud", "vpc")
    assert router.decide(RoutingRequest(privacy="sensitive")).fallbacks == ("vpc", "cloud")


def test_cost_estimate_uses_the_messages_when_input_tokens_is_not_given():
    msgs = [{"role": "user", "content": "x" * 4000}]
    assert estimate_tokens(msgs) == 1000
    router = ModelRouter(fakes(CLOUD))
    d = router.decide(RoutingRequest(output_tokens=0), msgs)
    assert d.est_cost == pytest.approx(0.01)


# -- calls, health, observed latency ------------------------------------------------------------


async def test_confidence_follows_health_not_a_constant():
    clock = Clock()
    local = Fake(GOOD_LOCAL, script=[LLMTimeout("local", "slow", retryable=True)])
    router = ModelRouter([local, Fake(CLOUD)], clock=clock, unhealthy_for=5)
    before = router.decide().confidence
    reply = await router.chat(ASK)
    assert reply.provider == "cloud"
    clock.now += 6
    after = router.decide()
    assert after.provider == "local" and after.confidence == pytest.approx(before / 2)


async def test_observed_latency_replaces_the_configured_estimate_after_three_calls():
    local = Fake(cfg("local", "local", quality=0.9, latency=1000), latency_ms=40)
    router = ModelRouter([local], ewma_alpha=0.5)
    for expected_source in ("configured", "configured", "configured", "observed"):
        assert router.decide().latency_source == expected_source
        await router.chat(ASK)
    d = router.decide(RoutingRequest(latency_budget_ms=100))
    assert d.est_latency_ms == pytest.approx(40) and "~40 ms observed <= budget 100 ms" in d.reason
    local.latency_ms = 200
    await router.chat(ASK)
    assert router.health()["local"]["ewma_ms"] == pytest.approx(120)
    assert router.decide().est_latency_ms == pytest.approx(120)


async def test_a_request_error_is_not_failed_over_nor_marks_the_provider():
    local = Fake(GOOD_LOCAL, script=[LLMBadResponse("local", "400 context too long", status=400)])
    cloud = Fake(CLOUD)
    router = ModelRouter([local, cloud])
    with pytest.raises(LLMBadResponse, match="context too long"):
        await router.chat(ASK)
    assert cloud.calls == 0 and router.health()["local"]["healthy"]
    assert router.recent(1)[0]["outcome"]["error"].startswith("LLMBadResponse")


async def test_emitted_decisions_are_json_and_a_broken_observer_changes_nothing(caplog):
    seen: list[dict] = []

    def emit(d: dict) -> None:
        seen.append(d)
        raise RuntimeError("observer bug")

    router = ModelRouter(fakes(GOOD_LOCAL, CLOUD), emit=emit)
    reply = await router.chat(ASK, request=RoutingRequest(quality_floor=0.8))
    assert reply.text == "local says hi"
    (d,) = seen
    json.dumps(d)
    assert d["route"] == "local" and d["provider"] == "local" and d["request"]["quality_floor"] == 0.8
    assert d["outcome"]["answered_by"] == "local" and d["outcome"]["failovers"] == []
    assert d["outcome"]["cost"] == 0 and d["outcome"]["attempts"][0]["ok"] is True
    assert router.recent() == seen and "router emit failed" in caplog.text
    h = router.health()
    assert h["local"]["calls"] == 1 and h["local"]["spend"] == 0 and h["cloud"]["calls"] == 0


async def test_spend_is_usage_times_prices_and_aclose_closes_providers():
    providers = fakes(CLOUD)
    router = ModelRouter(providers)
    await router.chat(ASK)
    assert router.health()["cloud"]["spend"] == pytest.approx((100 + 20) * 0.01 / 1000)
    await router.aclose()
    assert providers[0].closed


async def test_using_binds_a_request_for_a_loop():
    router = ModelRouter(fakes(GOOD_LOCAL, CLOUD))
    model = router.using(RoutingRequest(privacy="public", quality_floor=0.95))
    reply = await model.chat(ASK)
    assert reply.provider == "cloud" and router.recent(1)[0]["request"]["privacy"] == "public"


# -- real clients against scripted servers ------------------------------------------------------


def down_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def serve():
    started: list[ScriptedOpenAI] = []

    def start(*replies) -> ScriptedOpenAI:
        srv = ScriptedOpenAI(list(replies)).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def client(name: str, url: str, locality: str, *, quality: float, latency: float, **kw) -> LLMClient:
    return LLMClient(
        LLMConfig(
            name=name,
            base_url=url,
            api_key="k",
            model="m",
            locality=Locality(locality),
            quality=quality,
            expected_latency_ms=latency,
            max_retries=0,
            timeout=5,
            **kw,
        )
    )


async def test_a_private_request_never_reaches_the_cloud_even_with_every_local_provider_down(serve):
    cloud_srv = serve(text("cloud answer"))
    clock = Clock()
    local = client("local", down_url(), "local", quality=0.9, latency=100)
    cloud = client("cloud", cloud_srv.base_url, "cloud", quality=0.95, latency=800)
    async with ModelRouter([local, cloud], clock=clock) as router:
        with pytest.raises(LLMUnavailable) as info:
            await router.chat(ASK, request=RoutingRequest(privacy="private"))
        assert "'local'" in str(info.value) and "'cloud'" not in str(info.value)
        with pytest.raises(RoutingRefused) as refused:  # now local is marked unhealthy: defer, not cloud
            await router.chat(ASK, request=RoutingRequest(privacy="private"))
        assert refused.value.decision.route is Route.DEFER
        assert cloud_srv.requests == []
        assert [d["outcome"]["error"] is not None for d in router.recent()] == [True, True]


async def test_failover_to_the_next_eligible_provider_marks_the_down_one_until_it_expires(serve):
    backup_srv = serve(text("backup answer"))
    cloud_srv = serve()
    clock = Clock()
    seen: list[dict] = []
    providers = [
        client("local", down_url(), "local", quality=0.9, latency=100),
        client("backup", backup_srv.base_url, "private", quality=0.8, latency=300),
        client("cloud", cloud_srv.base_url, "cloud", quality=0.95, latency=800),
    ]
    async with ModelRouter(providers, clock=clock, unhealthy_for=30, emit=seen.append) as router:
        assert router.decide().fallbacks == ("backup", "cloud")
        reply = await router.chat(ASK)
        assert (reply.text, reply.provider) == ("backup answer", "backup")
        assert cloud_srv.requests == []
        (d,) = seen
        assert (
            d["provider"] == "local"
            and d["outcome"]["answered_by"] == "backup"
            and d["outcome"]["failovers"] == ["local"]
        )
        assert [(a["provider"], a["ok"]) for a in d["outcome"]["attempts"]] == [("local", False), ("backup", True)]
        health = router.health()["local"]
        assert health["healthy"] is False and health["unhealthy_until"] == clock.now + 30
        assert health["failures"] == 1 and "LLMUnavailable" in health["last_error"]
        during = router.decide()
        assert during.provider == "backup" and "local" not in during.fallbacks
        assert {c["name"]: c["why_not"] for c in during.considered}["local"] == "unhealthy for 30.0 s more"
        clock.now += 31
        assert router.decide().provider == "local" and router.health()["local"]["healthy"]


async def test_a_hanging_endpoint_times_out_and_fails_over(serve):
    hung = serve(text("never", hang=True))
    cloud_srv = serve(text("cloud answer"))
    slow = client("local", hung.base_url, "local", quality=0.9, latency=100)
    cloud = client("cloud", cloud_srv.base_url, "cloud", quality=0.95, latency=800)
    async with ModelRouter([slow, cloud]) as router:
        reply = await router.chat(ASK, timeout=0.3)
        assert reply.provider == "cloud"
        assert "LLMTimeout" in router.health()["local"]["last_error"]


async def test_when_every_provider_fails_the_error_names_each_one_and_why(serve):
    broken = serve(error(500, "model crashed"))
    providers = [
        client("first", down_url(), "local", quality=0.9, latency=100),
        client("second", broken.base_url, "local", quality=0.8, latency=100),
    ]
    async with ModelRouter(providers) as router:
        with pytest.raises(LLMUnavailable) as info:
            await router.chat(ASK)
    msg = str(info.value)
    assert "'first' (LLMUnavailable" in msg and "'second' (LLMUnavailable" in msg and "model crashed" in msg
    assert info.value.retryable


async def test_hybrid_returns_the_streamed_cloud_answer_with_the_local_draft(serve):
    local_srv = serve(text("quick draft"))
    cloud_srv = serve(text("refined answer"))
    local = client("local", local_srv.base_url, "local", quality=0.5, latency=100)
    cloud = client("cloud", cloud_srv.base_url, "cloud", quality=0.95, latency=800)
    tokens: list[str] = []
    async with ModelRouter([local, cloud]) as router:
        request = RoutingRequest(quality_floor=0.8, latency_budget_ms=200)
        reply = await router.chat(ASK, request=request, on_token=tokens.append)
    assert (reply.text, reply.provider) == ("refined answer", "cloud")
    assert reply.draft is not None and (reply.draft.text, reply.draft.provider) == ("quick draft", "local")
    assert "".join(tokens) == "refined answer"  # only the cloud streamed
    assert not local_srv.requests[0].get("stream") and cloud_srv.requests[0]["stream"] is True
    # the refiner sees the draft and is asked to check it
    refine = cloud_srv.requests[0]["messages"]
    assert refine[-2] == {"role": "assistant", "content": "quick draft"} and "draft" in refine[-1]["content"]
    outcome = router.recent(1)[0]["outcome"]
    assert [a["role"] for a in outcome["attempts"]] == ["draft", "refine"] and outcome["note"] is None


async def test_hybrid_answers_with_the_draft_when_the_cloud_fails_and_says_so(serve):
    local_srv = serve(text("quick draft"))
    cloud_srv = serve(error(503, "overloaded"))
    local = client("local", local_srv.base_url, "local", quality=0.5, latency=100)
    cloud = client("cloud", cloud_srv.base_url, "cloud", quality=0.95, latency=800)
    async with ModelRouter([local, cloud]) as router:
        reply = await router.chat(ASK, request=RoutingRequest(quality_floor=0.8, latency_budget_ms=200))
        assert (reply.text, reply.provider, reply.draft) == ("quick draft", "local", None)
        (d,) = router.recent()
        assert d["route"] == "hybrid" and d["outcome"]["answered_by"] == "local"
        assert "refine failed" in d["outcome"]["note"] and "overloaded" in d["outcome"]["note"]
        assert not router.health()["cloud"]["healthy"]


async def test_observed_latency_of_real_calls_replaces_a_wrong_configuration(serve):
    srv = serve(text("a"), text("b"), text("c"))
    local = client("local", srv.base_url, "local", quality=0.9, latency=30_000)
    async with ModelRouter([local]) as router:
        for _ in range(3):
            await router.chat(ASK)
        d = router.decide(RoutingRequest(latency_budget_ms=5_000))
    assert d.latency_source == "observed" and d.est_latency_ms < 5_000 and "observed" in d.reason
