-- POST runs/search in the experiment (it holds 20 runs), first page of 10.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

wrk.method = "POST"
wrk.path = "/api/2.0/mlflow/runs/search"
wrk.headers = common.headers()
wrk.body = string.format('{"experiment_ids": ["%s"], "max_results": 10}', os.getenv("BENCH_EXPERIMENT_ID"))
done = common.done
