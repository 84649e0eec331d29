"""Bundled captures: `demo.jsonl.gz` (regenerate with `python -m services.feed.captures.make_demo`)."""
