-- wrk script for bench/vault_unwrap.py: POST unwrapkey over keep-alive HTTPS, check every answer.
--
-- Run by bench/_wrk.py as  wrk -t T -c C -d D --latency -s unwrap.lua https://127.0.0.1:PORT
-- with the request in the environment (kept off the command line, where `ps` shows it):
--   UNWRAP_PATH   /keys/{name}/{version}/unwrapkey?api-version=7.4
--   UNWRAP_HOST   the vault's host name and port, sent as the Host header (the server checks it)
--   UNWRAP_TOKEN  the bearer token
--   UNWRAP_BODY   {"alg":"RSA-OAEP-256","value":"<ciphertext, base64url>"}
--   UNWRAP_EXPECT the expected "value" of the answer (base64url of the plaintext)
-- Every answer is checked: status 200 and the expected value in the body. done() prints one
-- line "UNWRAP_RESULT {json}" with wrk's counts, the latency percentiles (microseconds) and
-- the failed answers (non-200 by status, wrong bodies, the first failure's status and body).

local function need(name)
   local value = os.getenv(name)
   if value == nil or value == "" then
      error(name .. " is not set")
   end
   return value
end

wrk.method = "POST"
wrk.path = need("UNWRAP_PATH")
wrk.body = need("UNWRAP_BODY")
wrk.headers["Host"] = need("UNWRAP_HOST")
wrk.headers["Authorization"] = "Bearer " .. need("UNWRAP_TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

local expect = '"' .. need("UNWRAP_EXPECT") .. '"'

function init(args)
   ok = 0
   bad_status = 0
   wrong_body = 0
   statuses = {}
   first_failure = ""
end

function response(status, headers, body)
   if status ~= 200 then
      bad_status = bad_status + 1
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
   elseif body == nil or not string.find(body, expect, 1, true) then
      wrong_body = wrong_body + 1
   else
      ok = ok + 1
      return
   end
   if first_failure == "" then
      first_failure = tostring(status) .. " " .. string.sub(body or "", 1, 300)
   end
end

local function quote(text)
   text = string.gsub(text, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. text .. '"'
end

function done(summary, latency, requests)
   local ok_total, bad_total, wrong_total = 0, 0, 0
   local status_counts = {}
   local failure = ""
   for _, thread in ipairs(threads) do
      ok_total = ok_total + thread:get("ok")
      bad_total = bad_total + thread:get("bad_status")
      wrong_total = wrong_total + thread:get("wrong_body")
      for code, count in pairs(thread:get("statuses")) do
         status_counts[code] = (status_counts[code] or 0) + count
      end
      if failure == "" then
         failure = thread:get("first_failure")
      end
   end
   local parts = {}
   for code, count in pairs(status_counts) do
      table.insert(parts, string.format('"%s":%d', code, count))
   end
   local e = summary.errors
   io.write(string.format(
      'UNWRAP_RESULT {"duration_us":%d,"requests":%d,"ok":%d,"non_200":%d,"wrong_body":%d,'
         .. '"statuses":{%s},"first_failure":%s,"errors":{"connect":%d,"read":%d,"write":%d,'
         .. '"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,'
         .. '"mean":%.1f}}\n',
      summary.duration, summary.requests, ok_total, bad_total, wrong_total,
      table.concat(parts, ","), quote(failure), e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean
   ))
end
