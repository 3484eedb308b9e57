"""Prometheus metrics for the server, in a registry of its own (one per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tinythink.serve.host import ModelHost


class Metrics:
    def __init__(self, hosts: dict[str, ModelHost]):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("tinythink_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("tinythink_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.completion_tokens = Counter("tinythink_completion_tokens", "Tokens generated", ["model"], registry=r)
        buckets = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
        self.latency = Histogram("tinythink_request_seconds", "Request time, to the last token", ["model"],
                                 buckets=buckets, registry=r)
        self.ttft = Histogram("tinythink_time_to_first_token_seconds", "Time to the first generated text",
                              ["model"], buckets=buckets, registry=r)
        self.safety_blocked = Counter("tinythink_safety_blocked", "Texts the safety filter blocked", ["side"],
                                      registry=r)
        self.safety_flagged = Counter("tinythink_safety_flagged", "Texts the safety filter flagged", ["side"],
                                      registry=r)
        self.safety_review = Counter("tinythink_safety_review", "Texts sent for human review (sensitive domains)",
                                     ["side"], registry=r)
        gauges = {
            "tinythink_queue_depth": ("Requests waiting for a slot", lambda h: h.engine.queued),
            "tinythink_batch_size": ("Sequences in the running batch", lambda h: h.engine.active),
            "tinythink_kv_slots_used_ratio": ("Share of KV-cache slots in use",
                                              lambda h: 1 - len(h.engine.free) / h.engine.max_batch),
        }
        for name, (doc, read) in gauges.items():
            gauge = Gauge(name, doc, ["model"], registry=r)
            for model, host in hosts.items():
                gauge.labels(model).set_function(lambda read=read, host=host: read(host))

    def render(self) -> bytes:
        return generate_latest(self.registry)
