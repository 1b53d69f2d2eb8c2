-- The bench's workloads for wrk (bench/src/load/wrk.ts starts it): the same bodies, keys and
-- answer reading as workloads.ts does for autocannon, in LuaJIT, so the load generator costs a
-- fraction of the CPU per request.
--
-- Every wrk thread has ONE connection (wrk -t N -c N): its answers come back in the order of its
-- requests, so a FIFO per thread ties each answer to its keys, as workloads.ts does per connection.
-- A dropped connection (wrk counts a read/write error and reconnects) loses the request in
-- flight; single answers re-align on the key they echo, and a batch answer shifted onto earlier
-- keys is caught loudly by verification (keys acknowledged but absent, or stored though refused).
--
-- Thread t (0-based) of T sends keys <tag>-<t + T*k>, k = 0, 1, 2…: disjoint and dense over the
-- threads, so the bench's KeyTracker holds them all. Configuration comes from the environment:
-- MWRK_TAG, MWRK_SCENARIO, MWRK_TENANTS (file: "<workspace id> <token>" per line), MWRK_OCCURRED,
-- MWRK_THREADS, MWRK_OUT (where done() writes the per-thread results). With MWRK_PROPERTIES=1 every
-- event carries the `properties` of bench/src/stack/meters.ts benchProperties (the value lists and
-- bounds come from there too: MWRK_PROP_MODEL/REGION/ROUTE, space-separated, MWRK_PROP_TOKENS,
-- MWRK_PROP_USERS), for the meters of --meters.
--
-- Each thread writes "@t <thread> <requests> <events> <non-2xx> <bucket>:<count>…" to stderr about
-- once a second: its answers since the previous line and their latency histogram (bucket i holds
-- latencies below 0.05 ms × 1.15^(i+1)), which the bench adds up into its per-second series.

local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } mwrk_timespec;
  int clock_gettime(int clk_id, mwrk_timespec *tp);
]])
local ts = ffi.new("mwrk_timespec")
-- Bodies are built in buffers: no interned string per event (a 100-event body is ~30 kB).
local buffer = require("string.buffer")
local body_buf, req_buf = buffer.new(32768), buffer.new(33000)
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local SENT, ACKED, REFUSED = 1, 2, 4
local BATCH_SIZE, MIXED_BATCH_SIZE, RECENT = 100, 20, 4096
local SINGLE_PATH, BATCH_PATH = "/api/v1/meter", "/api/v1/meter/batch"
local BUCKET_BASE, BUCKET_RATIO, BUCKETS = 0.05, 1.15, 80

-- setup() and done() run in wrk's main Lua state; the threads are kept to read their results.
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(_)
  tag = os.getenv("MWRK_TAG")
  scenario = os.getenv("MWRK_SCENARIO")
  occurred = os.getenv("MWRK_OCCURRED")
  stride = tonumber(os.getenv("MWRK_THREADS"))
  tenants = {}
  for line in io.lines(os.getenv("MWRK_TENANTS")) do
    local ws, token = line:match("^(%S+) (%S+)$")
    if ws then
      table.insert(tenants, {
        ws = ws,
        auth = "Authorization: Bearer " .. token .. "\r\n",
        event_head = '{"workspace_id":"' .. ws .. '","event_type":"checkout.completed","quantity":1,"gmv_cents":',
      })
    end
  end
  if os.getenv("MWRK_PROPERTIES") == "1" then
    local function list(name)
      local t = {}
      for v in os.getenv(name):gmatch("%S+") do table.insert(t, v) end
      return t
    end
    props = {
      model = list("MWRK_PROP_MODEL"),
      region = list("MWRK_PROP_REGION"),
      route = list("MWRK_PROP_ROUTE"),
      tokens = tonumber(os.getenv("MWRK_PROP_TOKENS")),
      users = tonumber(os.getenv("MWRK_PROP_USERS")),
    }
  end
  host = "Host: " .. wrk.host .. ":" .. tostring(wrk.port) .. "\r\n"
  marker = '"idempotency_key":"' .. tag .. "-"
  key_head = ',"currency":"USD","idempotency_key":"' .. tag .. "-"
  -- Without its closing brace: the properties, if any, come before it (put_event).
  event_tail = '","occurred_at":"' .. occurred .. '"'
  -- st[k + 1]: the state bits of this thread's k-th key; q: requests in flight (one, mostly).
  st, nk = {}, 0
  q, qh, qt = {}, 1, 0
  recent, recent_fill = {}, 0
  ti = 0
  stored, duplicate, rejected = 0, 0, 0
  sc = {}
  tick_reqs, tick_events, tick_non2xx, hist = 0, 0, 0, {}
  next_tick = now_ms() + 1000
  -- wrk 4 calls request() once on thread 0's state before it starts (script_verify_request in
  -- wrk.c, counting the requests in the string for pipelining) and never sends that one: it must
  -- neither take a key nor wait in the FIFO, or every answer of thread 0 lands one request early.
  verify_call = tid == 0
end

local function fresh()
  local k = nk
  nk = nk + 1
  st[k + 1] = SENT
  return k
end

local function mark(k, b)
  st[k + 1] = bit.bor(st[k + 1] or 0, b)
end

-- Appends the event of this thread's k-th key to body_buf.
local function put_event(tenant, k)
  local n = tid + stride * k
  body_buf:put(tenant.event_head, 1000 + n % 9000, key_head, n, event_tail)
  if not props then
    body_buf:put("}")
  else
    body_buf:put(',"properties":{"model":"', props.model[n % #props.model + 1], '","region":"',
      props.region[n % #props.region + 1], '","route":"', props.route[n % #props.route + 1], '","tokens":"',
      1 + (n * 7919) % props.tokens, '","user":"u', n % props.users, '"}}')
  end
end

-- The request with body_buf as its body (emptied).
local function http(path, tenant)
  req_buf:put("POST ", path, " HTTP/1.1\r\n", host, tenant.auth, "Content-Type: application/json\r\nContent-Length: ",
    #body_buf, "\r\n\r\n"):put(body_buf)
  body_buf:reset()
  local r = req_buf:tostring()
  req_buf:reset()
  return r
end

local function push(k, count, batch)
  qt = qt + 1
  q[qt] = { k = k, count = count, batch = batch, t0 = now_ms() }
end

local function shift()
  if qh > qt then return nil end
  local f = q[qh]
  q[qh] = nil
  qh = qh + 1
  return f
end

local function single(tenant, k)
  push(k, 1, false)
  put_event(tenant, k)
  return http(SINGLE_PATH, tenant)
end

local function batch(tenant, size)
  local first = fresh()
  body_buf:put('{"events":[')
  put_event(tenant, first)
  for _ = 2, size do
    body_buf:put(",")
    put_event(tenant, fresh())
  end
  body_buf:put("]}")
  push(first, size, true)
  return http(BATCH_PATH, tenant)
end

local function pick_tenant()
  if #tenants == 1 then return tenants[1] end
  ti = (ti + 7919) % #tenants
  return tenants[ti + 1]
end

function request()
  if verify_call then
    verify_call = false
    body_buf:put("{}")
    return http(SINGLE_PATH, tenants[1])
  end
  if scenario == "single" or scenario == "quota" then
    return single(tenants[1], fresh())
  elseif scenario == "batch" then
    return batch(tenants[1], BATCH_SIZE)
  elseif scenario == "duplicates" then
    if recent_fill > 0 and math.random() < 0.5 then
      return single(tenants[1], recent[math.random(math.min(recent_fill, RECENT))])
    end
    local k = fresh()
    recent[recent_fill % RECENT + 1] = k
    recent_fill = recent_fill + 1
    return single(tenants[1], k)
  elseif scenario == "mixed" then
    if math.random() < 0.8 then return single(pick_tenant(), fresh()) end
    return batch(pick_tenant(), MIXED_BATCH_SIZE)
  end
  error("wrk-load.lua: unknown scenario " .. tostring(scenario))
end

local function ack_batch(f, body)
  local acc, dups, rej = body:match('^{"accepted":(%d+),"duplicates":(%d+),"rejected":(%d+)')
  if rej == "0" then
    for i = 0, f.count - 1 do mark(f.k + i, ACKED) end
    stored = stored + tonumber(acc)
    duplicate = duplicate + tonumber(dups)
    return tonumber(acc) + tonumber(dups)
  end
  local at = body:find('"results":[', 1, true)
  if at == nil then
    -- A 202 without per-event results (the bare-uWS ceiling): every event counts as taken.
    for i = 0, f.count - 1 do mark(f.k + i, ACKED) end
    stored = stored + f.count
    return f.count
  end
  local taken = 0
  for obj in body:sub(at + 10):gmatch("%b{}") do
    local index = tonumber(obj:match('"index":(%d+)'))
    local status = tonumber(obj:match('"status":(%d+)'))
    if index ~= nil and status ~= nil then
      if status == 202 then
        mark(f.k + index, ACKED)
        taken = taken + 1
        if obj:find('"duplicate":true', 1, true) then duplicate = duplicate + 1 else stored = stored + 1 end
      else
        rejected = rejected + 1
        -- 409 idempotency_key_in_use says another request holds the key: nothing about storage.
        if status ~= 409 then mark(f.k + index, REFUSED) end
      end
    end
  end
  return taken
end

local function answer(status, body)
  local f = shift()
  if f == nil then return 0, nil end
  if status == 202 and not f.batch then
    -- A dropped connection lost the answer of the request before: re-align on the echoed key.
    local at = body:find(marker, 1, true)
    if at ~= nil then
      local n = tonumber(body:match("^(%d+)", at + #marker))
      if n ~= nil and (n - tid) % stride == 0 then
        local k = (n - tid) / stride
        while f.k ~= k and qh <= qt do f = shift() end
      end
    end
    mark(f.k, ACKED)
    if body:find('"duplicate":true', 1, true) then duplicate = duplicate + 1 else stored = stored + 1 end
    return 1, f
  end
  if status == 202 then return ack_batch(f, body), f end
  rejected = rejected + f.count
  if status ~= 409 then
    for i = 0, f.count - 1 do mark(f.k + i, REFUSED) end
  end
  return 0, f
end

function response(status, _, body)
  local ok, events, f = pcall(answer, status, body or "")
  if not ok then
    -- A body this script cannot read: counted as refused, as workloads.ts does.
    rejected = rejected + 1
    events = 0
  end
  sc[status] = (sc[status] or 0) + 1
  local t = now_ms()
  tick_reqs = tick_reqs + 1
  tick_events = tick_events + events
  if status < 200 or status > 299 then tick_non2xx = tick_non2xx + 1 end
  if f ~= nil then
    local ms = t - f.t0
    local b = 0
    if ms > BUCKET_BASE then b = math.min(BUCKETS - 1, math.floor(math.log(ms / BUCKET_BASE) / math.log(BUCKET_RATIO))) end
    hist[b] = (hist[b] or 0) + 1
  end
  if t >= next_tick then
    local parts = { "@t", tid, tick_reqs, tick_events, tick_non2xx }
    for i = 0, BUCKETS - 1 do
      if hist[i] then table.insert(parts, i .. ":" .. hist[i]) end
    end
    io.stderr:write(table.concat(parts, " ") .. "\n")
    tick_reqs, tick_events, tick_non2xx, hist = 0, 0, 0, {}
    next_tick = t + 1000
  end
end

-- Per thread: "T <thread> <stored> <duplicate> <rejected> <status>:<count>,…", then
-- "K <thread> <digits>": the state bits of its keys k = 0, 1, 2… as one decimal digit each.
-- Then "L <p50> <p90> <p99> <max> <mean>" in µs (wrk's own histogram, every thread) and
-- "S <duration µs> <requests> <connect> <read> <write> <status> <timeout>".
function done(summary, latency, _)
  local out = assert(io.open(os.getenv("MWRK_OUT"), "w"))
  for _, thread in ipairs(threads) do
    local codes = {}
    for code, count in pairs(thread:get("sc") or {}) do table.insert(codes, code .. ":" .. count) end
    out:write(table.concat({ "T", thread:get("tid"), thread:get("stored") or 0, thread:get("duplicate") or 0,
      thread:get("rejected") or 0, table.concat(codes, ",") }, " ") .. "\n")
    local states = thread:get("st") or {}
    local digits = {}
    for k = 1, #states do digits[k] = states[k] end
    out:write("K " .. thread:get("tid") .. " " .. table.concat(digits) .. "\n")
  end
  out:write(table.concat({ "L", latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean }, " ") .. "\n")
  local e = summary.errors
  out:write(table.concat({ "S", summary.duration, summary.requests, e.connect, e.read, e.write, e.status,
    e.timeout }, " ") .. "\n")
  out:close()
end
