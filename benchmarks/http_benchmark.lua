-- wrk script of benchmarks/http_benchmark.py: every request gets its own Idempotency-Key.
--
-- Configured through environment variables set by the Python driver:
--   LEDGER_BENCH_MODE      "posting" (one two-entry posting), "batch" (a batch of
--                          LEDGER_BENCH_BATCH postings) or "account" (GET an account)
--   LEDGER_BENCH_SPACE     the space id
--   LEDGER_BENCH_ACCOUNTS  comma-separated account ids (no overdraft limit: nothing declines)
--   LEDGER_BENCH_TOKEN     a bearer token
--   LEDGER_BENCH_RUN       a run id, so keys never collide with an earlier run's
-- At the end it prints one JSON line: requests, seconds, non-2xx answers, socket errors and
-- latency percentiles in microseconds.

local mode = os.getenv("LEDGER_BENCH_MODE") or "posting"
local space = os.getenv("LEDGER_BENCH_SPACE")
local token = os.getenv("LEDGER_BENCH_TOKEN")
local run_id = os.getenv("LEDGER_BENCH_RUN") or "run"
local batch_size = tonumber(os.getenv("LEDGER_BENCH_BATCH") or "100")

local accounts = {}
for id in string.gmatch(os.getenv("LEDGER_BENCH_ACCOUNTS") or "", "[^,]+") do
  accounts[#accounts + 1] = id
end

local threads = {}
local thread_number = 0

function setup(thread)
  thread_number = thread_number + 1
  thread:set("thread_id", thread_number)
  threads[#threads + 1] = thread
end

local counter = 0

local function pair()
  local debit = accounts[math.random(#accounts)]
  local credit = accounts[math.random(#accounts)]
  while credit == debit do
    credit = accounts[math.random(#accounts)]
  end
  return debit, credit
end

local function posting_json()
  local debit, credit = pair()
  local cents = math.random(1, 99999)
  local amount = string.format("%d.%02d", math.floor(cents / 100), cents % 100)
  return '{"entries":[{"account_id":"' .. debit .. '","direction":"debit","amount":"' .. amount
    .. '"},{"account_id":"' .. credit .. '","direction":"credit","amount":"' .. amount .. '"}]}'
end

function init(args)
  math.randomseed(os.time() + (thread_id or 0) * 7919)
end

function request()
  counter = counter + 1
  local headers = { ["Authorization"] = "Bearer " .. token }
  if mode == "account" then
    local account = accounts[(counter % #accounts) + 1]
    return wrk.format("GET", "/v1/spaces/" .. space .. "/accounts/" .. account, headers)
  end
  headers["Content-Type"] = "application/json"
  headers["Idempotency-Key"] = run_id .. "-" .. mode .. "-" .. (thread_id or 0) .. "-" .. counter
  if mode == "batch" then
    local items = {}
    for i = 1, batch_size do
      items[i] = posting_json()
    end
    local body = '{"postings":[' .. table.concat(items, ",") .. ']}'
    return wrk.format("POST", "/v1/spaces/" .. space .. "/postings/batch", headers, body)
  end
  return wrk.format("POST", "/v1/spaces/" .. space .. "/postings", headers, posting_json())
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"latency_us_p50": %d, "latency_us_p99": %d, "latency_us_max": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
