-- wrk script: every request asks about a new user id, so no answer can come from a cache.
-- Arguments (after --): PATH [MODE]
--   MODE "path"  (default): GET PATH .. "user-<n>"
--   MODE "fixed":           GET PATH (the same request each time, e.g. /healthz)
--   MODE "ofrep":           POST PATH with {"context":{"targetingKey":"user-<n>"}}
-- done() prints one machine-readable line: RESULT requests seconds p50_us p99_us errors

local path, mode
local counter = 0
local json = { ["content-type"] = "application/json" }

function init(args)
    path = args[1]
    mode = args[2] or "path"
end

function request()
    counter = counter + 1
    if mode == "fixed" then
        return wrk.format("GET", path)
    elseif mode == "ofrep" then
        return wrk.format("POST", path, json, '{"context":{"targetingKey":"user-' .. counter .. '"}}')
    end
    return wrk.format("GET", path .. "user-" .. counter)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %d %.3f %d %d %d\n", summary.requests, summary.duration / 1e6,
        latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
