-- POST runs/log-batch: 10 metrics per request, each request at a new step (no duplicate rows).
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

local run_id = os.getenv("BENCH_RUN_ID")
local headers = common.headers()
local counter = 0
-- Each wrk process starts its steps at a fresh offset, so bursts never collide with earlier ones.
local base = math.floor(os.time() * 1000 % 1e9) * 100

request = function()
  counter = counter + 1
  local step = base + counter
  local metrics = {}
  for i = 1, 10 do
    metrics[i] = string.format('{"key": "m%d", "value": %d.5, "timestamp": %d, "step": %d}', i, counter, step, step)
  end
  local body = string.format('{"run_id": "%s", "metrics": [%s]}', run_id, table.concat(metrics, ", "))
  return wrk.format("POST", "/api/2.0/mlflow/runs/log-batch", headers, body)
end
done = common.done
