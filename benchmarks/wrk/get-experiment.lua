-- GET an experiment by id.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

wrk.method = "GET"
wrk.path = "/api/2.0/mlflow/experiments/get?experiment_id=" .. os.getenv("BENCH_EXPERIMENT_ID")
wrk.headers = common.headers()
done = common.done
