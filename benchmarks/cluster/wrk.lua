-- wrk script for bench.py: POST the body in $BODY_FILE (GET when it is unset), with
-- $ANNEAL_TOKEN as a bearer token when set, and print one JSON line of results at the end.
local body_file = os.getenv("BODY_FILE")
if body_file and body_file ~= "" then
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  local file = assert(io.open(body_file, "r"))
  wrk.body = file:read("*a")
  file:close()
end
local token = os.getenv("ANNEAL_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), errors))
end
