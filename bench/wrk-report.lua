-- wrk script used by bench/run: prints one machine-readable line at the end of a run.
-- Latencies are wrk's per-request latencies in microseconds (request written -> response read;
-- connect time is not included).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f sock_errors=%d non2xx=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
