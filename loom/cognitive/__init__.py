"""Thinking agents: an LLM client on ``openai``, a model router, the cognitive loop.

    from loom.cognitive import LLMClient, LLMConfig, SimpleCognitiveLoop, CognitiveConfig, CognitiveAgent
    llm = LLMClient(LLMConfig(base_url="http://127.0.0.1:8000/v1", api_key="x", model="m"))
    loop = SimpleCognitiveLoop(CognitiveConfig(), llm, rt.tools)
    answer = await loop.run("What is 2 + 3?")

Nothing here imports ``openai`` until a model is actually called.
"""

from loom.cognitive.agent import CognitiveAgent, goal_of
from loom.cognitive.config import DANGEROUS_TOOLS, ApprovalRequest, Approver, CognitiveConfig, ThinkingStrategy
from loom.cognitive.llm.client import LLMClient
from loom.cognitive.llm.generate_tool import LLMGenerateTool
from loom.cognitive.llm.router import ModelRouter, Privacy, Route, RouteDecision, RoutingRefused, RoutingRequest
from loom.cognitive.llm.types import (
    ChatModel,
    LLMBadResponse,
    LLMConfig,
    LLMError,
    LLMResponse,
    LLMTimeout,
    LLMUnavailable,
    Locality,
    ToolCall,
    Usage,
)
from loom.cognitive.loop import EventSink, SimpleCognitiveLoop
from loom.cognitive.steps import Answer, Step, StepKind, StopReason
from loom.cognitive.toolbelt import Observation, ToolBelt

__all__ = [
    "DANGEROUS_TOOLS",
    "Answer",
    "ApprovalRequest",
    "Approver",
    "ChatModel",
    "CognitiveAgent",
    "CognitiveConfig",
    "EventSink",
    "LLMBadResponse",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LLMGenerateTool",
    "LLMResponse",
    "LLMTimeout",
    "LLMUnavailable",
    "Locality",
    "ModelRouter",
    "Observation",
    "Privacy",
    "Route",
    "RouteDecision",
    "RoutingRefused",
    "RoutingRequest",
    "SimpleCognitiveLoop",
    "Step",
    "StepKind",
    "StopReason",
    "ThinkingStrategy",
    "ToolBelt",
    "ToolCall",
    "Usage",
    "goal_of",
]
