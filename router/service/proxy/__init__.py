"""The proxy's HTTP routes (``router serve --proxy``): OpenAI's chat completions, Anthropic's messages, the
model list. The routing and forwarding are router/proxy/'s."""
