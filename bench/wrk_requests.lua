-- wrk script for bench/run.py: cycles through API keys (one per line in a file), one request per key
-- in turn, and prints one JSON line (prefix "BENCH_JSON ") with throughput and latency percentiles.
-- Usage: wrk -tT -cC ... -s bench/wrk_requests.lua URL -- KEYS_FILE METHOD PATH BODY [STAGGER_MS]

local reqs = {}
local templates = {}
local idx = 0
local threads = 0
local counter = 0

function setup(thread)
   thread:set("tid", threads)
   threads = threads + 1
end

function init(args)
   local keys_file, method, path, body, stagger_ms = args[1], args[2], args[3], args[4], tonumber(args[5] or "0")
   if body == "" then body = nil end
   -- wrk calls init() for thread N right before starting it: sleeping here staggers the threads'
   -- connection bursts, so that uvicorn's workers (which accept from one shared socket) each get
   -- a share instead of the first one to wake taking all of them
   if stagger_ms and stagger_ms > 0 then os.execute(string.format("sleep %.3f", stagger_ms / 1000)) end
   for key in io.lines(keys_file) do
      if key ~= "" then
         local headers = { ["Authorization"] = "Bearer " .. key }
         if body then headers["Content-Type"] = "application/json" end
         if body and string.find(body, "{n}", 1, true) then
            -- a body with "{n}" (usage events' ids) gets a fresh value for each one, per request
            templates[#templates + 1] = { method = method, path = path, headers = headers, body = body }
         else
            reqs[#reqs + 1] = wrk.format(method, path, headers, body)
         end
      end
   end
   -- each wrk thread starts at its own place in the key list
   idx = ((tid or 0) * 7919) % math.max(#reqs, #templates)
end

local function fresh()
   counter = counter + 1
   return string.format("%d-%d-%d", tid or 0, os.time(), counter)
end

function request()
   if #templates > 0 then
      idx = idx % #templates + 1
      local t = templates[idx]
      local body = string.gsub(t.body, "{n}", fresh)
      return wrk.format(t.method, t.path, t.headers, body)
   end
   idx = idx % #reqs + 1
   return reqs[idx]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
