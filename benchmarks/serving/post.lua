-- wrk script: POST the body in $BODY_FILE, and print one JSON line of results at the end. With
-- $ANNEAL_TOKEN set (run.sh and delay_sweep.sh pass the server's admin token), every request
-- carries it as a bearer token, as a user's client would.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("ANNEAL_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local file = assert(io.open(os.getenv("BODY_FILE"), "r"))
wrk.body = file:read("*a")
file:close()

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), errors))
end
