"""``python -m tunegate.proxy.fake_upstream``: the fake OpenAI API on its own (``tunegate fake-upstream`` does the
same)."""

from __future__ import annotations

import argparse

from tunegate.proxy.fake_upstream.server import serve

parser = argparse.ArgumentParser(description="Fake OpenAI upstream")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8001)
parser.add_argument("--api-key", default=None)
args = parser.parse_args()
serve(host=args.host, port=args.port, api_key=args.api_key)
