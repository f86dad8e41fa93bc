"""Loopback servers for the premium providers we cannot reach from tests: OpenAI chat completions,
Anthropic messages and Gemini generateContent, one module each. Each checks requests the way the
provider does (auth header, required and unknown fields, structured output, tools and tool turns),
answers with the provider's own success, stream and error bodies; scripts and faults come from
``LoopbackServer``.
"""

from router.testing._fake_anthropic import FakeAnthropic
from router.testing._fake_gemini import FakeGemini
from router.testing._fake_openai import FakeOpenAI

__all__ = ["FakeAnthropic", "FakeGemini", "FakeOpenAI"]
