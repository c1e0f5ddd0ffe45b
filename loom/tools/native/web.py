"""``weather.get`` (Open-Meteo) and ``web.search`` (DuckDuckGo instant answers, or Brave with
``BRAVE_API_KEY``) over httpx. Base URLs are configurable, so tests serve recorded responses
from 127.0.0.1. Failures map to codes: a timeout → ``ACTION_TIMEOUT``, HTTP 5xx / 4xx / bad JSON /
unreachable → ``UPSTREAM_ERROR``, an unknown place → ``INVALID_PARAMS``."""

from __future__ import annotations

import os
from typing import Any

from loom.errors import ToolError
from loom.tools.result import ErrorCode

__all__ = ["HttpJson", "WeatherTool", "WebSearchTool"]

WMO = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "rime fog",
    51: "light drizzle",
    53: "drizzle",
    55: "dense drizzle",
    56: "freezing drizzle",
    57: "freezing drizzle",
    61: "light rain",
    63: "rain",
    65: "heavy rain",
    66: "freezing rain",
    67: "freezing rain",
    71: "light snow",
    73: "snow",
    75: "heavy snow",
    77: "snow grains",
    80: "rain showers",
    81: "rain showers",
    82: "violent rain showers",
    85: "snow showers",
    86: "snow showers",
    95: "thunderstorm",
    96: "thunderstorm with hail",
    99: "thunderstorm with hail",
}


class HttpJson:
    """A lazily created httpx2 client that returns JSON or raises coded ToolErrors."""

    def __init__(self, tool: str, timeout: float = 10.0) -> None:
        self.tool = tool
        self.timeout = timeout
        self._client: Any = None

    async def get(self, url: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        import httpx2

        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self.timeout, headers={"User-Agent": "loom-notebook/0.1"})
        try:
            resp = await self._client.get(url, params=params, headers=headers or {})
        except httpx2.TimeoutException:
            raise ToolError(
                ErrorCode.ACTION_TIMEOUT, self.tool, f"{url} did not answer within {self.timeout:g}s"
            ) from None
        except httpx2.RequestError as exc:
            raise ToolError(ErrorCode.UPSTREAM_ERROR, self.tool, f"{url} unreachable: {exc!r}") from None
        if resp.status_code >= 400:
            message = f"{url} answered HTTP {resp.status_code}: {resp.text[:200]}"
            raise ToolError(ErrorCode.UPSTREAM_ERROR, self.tool, message, {"status": str(resp.status_code)})
        try:
            return resp.json()
        except ValueError:
            raise ToolError(
                ErrorCode.UPSTREAM_ERROR, self.tool, f"{url} did not return JSON: {resp.text[:120]!r}"
            ) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class WeatherTool:
    name = "weather.get"
    description = "Current weather for a place (Open-Meteo): temperature, conditions, humidity, wind."
    provider = "native"
    schema = {
        "type": "object",
        "properties": {
            "location": {"type": "string", "minLength": 1},
            "units": {"enum": ["celsius", "fahrenheit"], "default": "celsius"},
        },
        "required": ["location"],
        "additionalProperties": False,
    }

    def __init__(self, *, geocoding_url: str | None = None, forecast_url: str | None = None, timeout: float = 10.0):
        self.geocoding_url = geocoding_url or os.environ.get(
            "LOOM_GEOCODING_URL", "https://geocoding-api.open-meteo.com/v1/search"
        )
        self.forecast_url = forecast_url or os.environ.get(
            "LOOM_FORECAST_URL", "https://api.open-meteo.com/v1/forecast"
        )
        self.http = HttpJson(self.name, timeout)

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        location, units = args["location"].strip(), args.get("units") or "celsius"
        geo = await self.http.get(
            self.geocoding_url, {"name": location, "count": 1, "language": "en", "format": "json"}
        )
        places = geo.get("results") if isinstance(geo, dict) else None
        if not places:
            raise ToolError(ErrorCode.INVALID_PARAMS, self.name, f"no place named {location!r}")
        place = places[0]
        try:
            lat, lon = float(place["latitude"]), float(place["longitude"])
        except (KeyError, TypeError, ValueError):
            raise ToolError(
                ErrorCode.UPSTREAM_ERROR, self.name, f"geocoding answer lacks coordinates: {place!r}"
            ) from None
        data = await self.http.get(
            self.forecast_url,
            {
                "latitude": lat,
                "longitude": lon,
                "temperature_unit": units,
                "current": "temperature_2m,relative_humidity_2m,wind_speed_10m,weather_code",
            },
        )
        current = data.get("current") if isinstance(data, dict) else None
        if not isinstance(current, dict) or "temperature_2m" not in current:
            raise ToolError(ErrorCode.UPSTREAM_ERROR, self.name, "forecast answer has no current weather")
        code = current.get("weather_code")
        return {
            "location": ", ".join(p for p in (place.get("name"), place.get("country")) if p),
            "latitude": lat,
            "longitude": lon,
            "temperature": current["temperature_2m"],
            "units": units,
            "conditions": WMO.get(code, f"weather code {code}"),
            "humidity": current.get("relative_humidity_2m"),
            "wind_speed": current.get("wind_speed_10m"),
        }

    async def aclose(self) -> None:
        await self.http.aclose()


class WebSearchTool:
    name = "web.search"
    description = "Search the web: DuckDuckGo instant answers, or Brave Search when BRAVE_API_KEY is set."
    provider = "native"
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        },
        "required": ["query"],
        "additionalProperties": False,
    }

    def __init__(
        self,
        *,
        duckduckgo_url: str | None = None,
        brave_url: str | None = None,
        brave_key: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.duckduckgo_url = duckduckgo_url or os.environ.get("LOOM_DUCKDUCKGO_URL", "https://api.duckduckgo.com/")
        self.brave_url = brave_url or os.environ.get("LOOM_BRAVE_URL", "https://api.search.brave.com/res/v1/web/search")
        self._brave_key = brave_key
        self.http = HttpJson(self.name, timeout)

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        query, limit = args["query"].strip(), int(args.get("limit") or 5)
        key = self._brave_key or os.environ.get("BRAVE_API_KEY")
        if key:
            data = await self.http.get(
                self.brave_url,
                {"q": query, "count": limit},
                {"Accept": "application/json", "X-Subscription-Token": key},
            )
            items = (data.get("web") or {}).get("results") or [] if isinstance(data, dict) else []
            results = [
                {"title": r.get("title", ""), "url": r.get("url", ""), "snippet": r.get("description", "")}
                for r in items
            ]
            engine = "brave"
        else:
            data = await self.http.get(
                self.duckduckgo_url, {"q": query, "format": "json", "no_html": 1, "skip_disambig": 1}
            )
            results, engine = _duckduckgo(data), "duckduckgo"
        return {"query": query, "engine": engine, "results": results[:limit], "count": min(len(results), limit)}

    async def aclose(self) -> None:
        await self.http.aclose()


def _duckduckgo(data: Any) -> list[dict[str, str]]:
    if not isinstance(data, dict):
        raise ToolError(ErrorCode.UPSTREAM_ERROR, "web.search", "DuckDuckGo answer is not an object")
    out = []
    if data.get("AbstractText"):
        out.append(
            {
                "title": data.get("Heading") or "Summary",
                "url": data.get("AbstractURL", ""),
                "snippet": data["AbstractText"],
            }
        )

    def walk(topics: list[Any]) -> None:
        for t in topics:
            if isinstance(t, dict) and "Topics" in t:
                walk(t["Topics"])
            elif isinstance(t, dict) and t.get("FirstURL"):
                text = t.get("Text", "")
                out.append({"title": text.split(" - ")[0][:120], "url": t["FirstURL"], "snippet": text})

    walk(data.get("RelatedTopics") or [])
    return out
