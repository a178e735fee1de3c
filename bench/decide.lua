-- wrk script for `make bench`: POST varied /v1/decide bodies, print one JSON summary.
--
-- Usage: wrk -s bench/decide.lua URL -- BODIES_FILE
-- BODIES_FILE holds one JSON body per line (bench/workload.py writes it). Requests are
-- formatted once per thread in init() so wrk spends no time building them during the run.

local threads = {}
local counter = 0

function setup(thread)
   -- Each thread starts at a different offset so threads do not send in lock-step.
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local requests = {}
local index = 0

function init(args)
   local path = args[1]
   if path == nil then
      error("pass the bodies file after --")
   end
   local headers = {["Content-Type"] = "application/json"}
   for line in io.lines(path) do
      if #line > 0 then
         table.insert(requests, wrk.format("POST", "/v1/decide", headers, line))
      end
   end
   if #requests == 0 then
      error("no bodies in " .. path)
   end
   index = ((id or 0) * 7919) % #requests
end

function request()
   index = index + 1
   if index > #requests then
      index = 1
   end
   return requests[index]
end

function done(summary, latency, requests_)
   local e = summary.errors
   -- wrk counts a response with status >= 400 in errors.status.
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, ' ..
      '"mean_us": %.1f, "non2xx": %d, "connect_errors": %d, "read_errors": %d, ' ..
      '"write_errors": %d, "timeouts": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean,
      e.status, e.connect, e.read, e.write, e.timeout))
end
