-- wrk driver for opauth's side of `make bench-peers`: the same closed loop and the same output as the peer
-- harness's wrk_post.lua ('<prefix>.rps|p50|p99|errors value unit'), for GET or POST, with extra headers.
--
-- usage: WRK_PREFIX=name [WRK_UNIT=resp/s] [WRK_HEADERS='Name: value|Name: value'] \
--   wrk -t1 -c4 -d5s -s wrk_opauth.lua URL -- <dir> <n> <method> <path-or-"-"> <content-type> <status> <max_per_thread>
--   POST: <dir>/<i>.bin are the bodies sent to <path>;  GET: <dir>/<i>.bin each hold a path to fetch.
--   status: the HTTP status every answer must have (200, 201); a longer body than 8 bytes is required too.

threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local dir, n, method, path, ctype = args[1], tonumber(args[2]), args[3], args[4], args[5]
  want = tonumber(args[6] or "200")
  maxreq = tonumber(args[7] or "1000000")
  local headers = {}
  if ctype ~= "-" then headers["Content-Type"] = ctype end
  for pair in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^|]+") do
    local name, value = string.match(pair, "^%s*([^:]+):%s*(.*)$")
    if name then headers[name] = value end
  end
  reqs = {}
  for i = 0, n - 1 do
    local f = assert(io.open(string.format("%s/%d.bin", dir, i), "rb"))
    local data = f:read("*a")
    f:close()
    if method == "GET" then
      reqs[#reqs + 1] = wrk.format("GET", data, headers, nil)
    else
      reqs[#reqs + 1] = wrk.format(method, path, headers, data)
    end
  end
  idx = math.random(#reqs)
  ok, bad, capped = 0, 0, 0
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function response(status, headers, body)
  if status == want and #body > 8 then ok = ok + 1 else bad = bad + 1 end
  if ok + bad >= maxreq then
    capped = 1
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local prefix = os.getenv("WRK_PREFIX") or "wrk"
  local unit = os.getenv("WRK_UNIT") or "resp/s"
  local okt, badt, cap = 0, 0, 0
  for _, t in ipairs(threads) do
    okt = okt + t:get("ok")
    badt = badt + t:get("bad")
    cap = cap + t:get("capped")
  end
  local secs = summary.duration / 1e6
  local e = summary.errors
  local sockerr = e.connect + e.read + e.write + e.timeout
  io.write(string.format("%s.rps %.2f %s\n", prefix, okt / secs, unit))
  io.write(string.format("%s.p50 %.3f ms\n", prefix, latency:percentile(50) / 1000))
  io.write(string.format("%s.p99 %.3f ms\n", prefix, latency:percentile(99) / 1000))
  io.write(string.format("%s.errors %d count\n", prefix, badt + sockerr))
  if cap > 0 then io.write(string.format("# WARNING %s hit the per-thread request cap; rps is a lower bound\n", prefix)) end
end
