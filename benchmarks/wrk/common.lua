-- Shared by the wrk scripts of bench_server.py: the Authorization header from the environment, and a
-- one-line JSON summary on stdout that the harness parses.
local M = {}

function M.headers()
  local h = { ["Content-Type"] = "application/json" }
  local auth = os.getenv("BENCH_AUTHORIZATION")
  if auth ~= nil and auth ~= "" then
    h["Authorization"] = auth
  end
  return h
end

function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_s": %.6f, "p50_us": %.1f, "p99_us": %.1f, ' ..
    '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end

return M
