-- wrk script like post.lua that also counts answers by status (200, 429, other), for the 1,000
-- connection run: the server must answer or refuse with 429, nothing else. Each thread counts its
-- own; done() sums them.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("ANNEAL_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local file = assert(io.open(os.getenv("BODY_FILE"), "r"))
wrk.body = file:read("*a")
file:close()

local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
init = function()
  ok, refused, other = 0, 0, 0
end
response = function(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 429 then refused = refused + 1 else other = other + 1 end
end

done = function(summary, latency, requests)
  local o, r, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); r = r + t:get("refused"); x = x + t:get("other")
  end
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_us": %d, "p99_us": %d, "ok": %d, "too_many": %d, "other_status": %d, "socket_errors": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), o, r, x, errors, x + errors))
end
