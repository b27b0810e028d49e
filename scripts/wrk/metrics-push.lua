-- wrk script: POST a healthy metrics sample for one flag, as an app service would.
-- Arguments (after --): FLAG TOKEN
-- done() prints one machine-readable line: RESULT requests seconds p50_us p99_us errors

local body = '{"requests": 100, "errors": 1}'

function init(args)
    wrk.method = "POST"
    wrk.path = "/flags/" .. args[1] .. "/metrics"
    wrk.body = body
    wrk.headers["authorization"] = "Bearer " .. args[2]
    wrk.headers["content-type"] = "application/json"
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %d %.3f %d %d %d\n", summary.requests, summary.duration / 1e6,
        latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
