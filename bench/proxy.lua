-- wrk script for the proxy benchmark: replay whole requests, optionally at a fixed rate.
--
-- Usage: wrk -s bench/proxy.lua URL -- REQUESTS_FILE [RATE_PER_THREAD]
-- REQUESTS_FILE: one request a line, tab-separated: method, path, body, then header
-- names and values (bench/proxy_workload.py writes it). Requests are formatted once per
-- thread in init() so wrk spends no time building them during the run.
--
-- Without RATE_PER_THREAD every connection sends its next request as soon as the last
-- answer arrives: the maximum throughput at that concurrency.
--
-- With RATE_PER_THREAD (requests/s) the thread sends at that fixed rate. Debian has no
-- wrk2, and plain wrk cannot pace, but it asks delay() how long (ms) to wait before each
-- request it sends on a connection. delay() here hands out send times from one schedule
-- per thread, one slot every 1/RATE seconds on a monotonic clock (LuaJIT's FFI calls
-- clock_gettime; Lua's own clocks are too coarse or count CPU time), and returns the
-- wait until the slot it claims. So the rate is exact however long answers take, as long
-- as a connection is free for every slot: the harness opens many more connections than
-- the rate needs, so there always is one. wrk waits whole milliseconds, so each request
-- leaves within about a millisecond of its slot; the average rate is unaffected because
-- slots advance by the exact period. Like wrk (not wrk2) the latency is counted from the
-- moment the request is sent: if the server fell behind, its slots pile up in the past
-- and go out at once, closed-loop, and the harness sees that as a rate below the target.
--
-- Answers are counted by status code (response()), so the harness can tell the expected
-- non-2xx (a failed login's 401, a challenge's 403) from real errors.

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
statuses = {}

local function split(line)
   local fields = {}
   local start = 1
   while true do
      local tab = string.find(line, "\t", start, true)
      if tab == nil then
         table.insert(fields, string.sub(line, start))
         return fields
      end
      table.insert(fields, string.sub(line, start, tab - 1))
      start = tab + 1
   end
end

local function monotonic_clock()
   local ffi = require("ffi")
   ffi.cdef [[
      struct riskgate_bench_timespec { long tv_sec; long tv_nsec; };
      int clock_gettime(int clock_id, struct riskgate_bench_timespec *tp);
   ]]
   local ts = ffi.new("struct riskgate_bench_timespec")
   local CLOCK_MONOTONIC = 1 -- Linux
   return function()
      ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
      return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
   end
end

function init(args)
   local path = args[1]
   if path == nil then
      error("pass the requests file after --")
   end
   for line in io.lines(path) do
      if #line > 0 then
         local f = split(line)
         local headers = {}
         for i = 4, #f - 1, 2 do
            headers[f[i]] = f[i + 1]
         end
         local body = nil
         if #f[3] > 0 then
            body = f[3]
         end
         table.insert(requests, wrk.format(f[1], f[2], headers, body))
      end
   end
   if #requests == 0 then
      error("no requests in " .. path)
   end
   index = ((id or 0) * 7919) % #requests

   local rate = tonumber(args[2] or "")
   if rate ~= nil and rate > 0 then
      -- Defined only when pacing: wrk looks for a global delay() after init() and
      -- otherwise sends without waiting.
      local now = monotonic_clock()
      local period = 1.0 / rate
      local next_slot = nil
      function delay()
         local t = now()
         if next_slot == nil then
            next_slot = t
         end
         local wait = next_slot - t
         next_slot = next_slot + period
         if wait <= 0 then
            return 0
         end
         return math.floor(wait * 1000 + 0.5)
      end
   end
end

function request()
   index = index + 1
   if index > #requests then
      index = 1
   end
   return requests[index]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests_)
   local e = summary.errors
   local counted = {}
   for _, thread in ipairs(threads) do
      local seen = thread:get("statuses") or {}
      for status, n in pairs(seen) do
         counted[status] = (counted[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(counted) do
      table.insert(parts, string.format('"%d": %d', status, n))
   end
   -- wrk counts a response with status >= 400 in errors.status.
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, ' ..
      '"mean_us": %.1f, "non2xx": %d, "connect_errors": %d, "read_errors": %d, ' ..
      '"write_errors": %d, "timeouts": %d, "statuses": {%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean,
      e.status, e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
