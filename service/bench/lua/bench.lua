-- One wrk script for every benchmarked path, configured through the environment:
--   BENCH_METHOD           request method (default GET)
--   BENCH_HEADERS          "Name: value" lines separated by newlines
--   BENCH_BODY             a fixed body (wrk builds the request once: no Lua per request)
--   BENCH_BODY_TEMPLATE    a body in which %N% becomes a number unique to each request of the run
--   BENCH_PATHS_FILE       a file of request paths, one per line, cycled through
-- done() prints one line, BENCH_RESULT {json}, with the counts and latency percentiles (microseconds).

local method = os.getenv("BENCH_METHOD") or "GET"
local template = os.getenv("BENCH_BODY_TEMPLATE")
local paths_file = os.getenv("BENCH_PATHS_FILE")

wrk.method = method
local raw_headers = os.getenv("BENCH_HEADERS") or ""
for line in raw_headers:gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
if os.getenv("BENCH_BODY") then wrk.body = os.getenv("BENCH_BODY") end

local threads = {}
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local counter = 0
local paths = nil
local cursor = 0

function init(args)
  if paths_file then
    paths = {}
    for line in io.lines(paths_file) do
      if #line > 0 then paths[#paths + 1] = line end
    end
    -- threads start at different places so that they do not ask for the same thing in step
    cursor = (tid * 7919) % #paths
  end
end

if template or paths_file then
  function request()
    local body = nil
    local path = nil
    if template then
      counter = counter + 1
      -- tid in the high part: unique across threads without coordination
      body = template:gsub("%%N%%", tostring(tid * 1000000000 + counter))
    end
    if paths then
      cursor = cursor % #paths + 1
      path = paths[cursor]
    end
    return wrk.format(nil, path, nil, body)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
