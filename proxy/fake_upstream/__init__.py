"""The fake OpenAI API the tests, the demo and the benchmarks call: a package of its own, importing nothing from
the product, so that what it answers is what an upstream would, not what the gateway expects."""

from tunegate.proxy.fake_upstream.server import FakeUpstream, count_tokens, serve, server

__all__ = ["FakeUpstream", "count_tokens", "serve", "server"]
