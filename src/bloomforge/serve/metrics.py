"""The server's counters, as Prometheus text for `GET /metrics`.

In: observations from the HTTP side (route, status, seconds) and the engine (tokens, forward
passes, running rows, rows stopped from outside and why). Out: the Prometheus exposition text.
"""

from __future__ import annotations

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.prompt_tokens = self.generated_tokens = self.batches = 0
        self.running_rows = 0
        self.cancelled: dict[str, int] = {}  # rows stopped from outside, by reason
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        self.latency_sum += seconds
        i = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
        self.latency[i] += 1

    def text(self, queue_depth: int) -> str:
        out = ["# TYPE bloomforge_requests_total counter"]
        for (path, status), n in sorted(self.requests.items()):
            out.append(f'bloomforge_requests_total{{path="{path}",status="{status}"}} {n}')
        out += [
            "# TYPE bloomforge_prompt_tokens_total counter",
            f"bloomforge_prompt_tokens_total {self.prompt_tokens}",
            "# TYPE bloomforge_generated_tokens_total counter",
            f"bloomforge_generated_tokens_total {self.generated_tokens}",
            "# TYPE bloomforge_batches_total counter",  # forward passes (prefill, decode, score)
            f"bloomforge_batches_total {self.batches}",
            "# TYPE bloomforge_cancelled_rows_total counter",
        ]
        for reason in ("disconnect", "timeout"):
            n = self.cancelled.get(reason, 0)
            out.append(f'bloomforge_cancelled_rows_total{{reason="{reason}"}} {n}')
        out += [
            "# TYPE bloomforge_running_rows gauge",
            f"bloomforge_running_rows {self.running_rows}",
            "# TYPE bloomforge_queue_depth gauge",
            f"bloomforge_queue_depth {queue_depth}",
            "# TYPE bloomforge_request_seconds histogram",
        ]
        total = 0
        for b, n in zip((*LATENCY_BUCKETS, "+Inf"), self.latency, strict=True):
            total += n
            out.append(f'bloomforge_request_seconds_bucket{{le="{b}"}} {total}')
        out += [
            f"bloomforge_request_seconds_sum {self.latency_sum:.6f}",
            f"bloomforge_request_seconds_count {total}",
        ]
        return "\n".join(out) + "\n"
