-- wrk script: durable job submissions (POST /v1/jobs). Token from the environment (RESERVOIR_TOKEN).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RESERVOIR_TOKEN")
-- RESERVOIR_POOL (default h100) and, for an admin token, RESERVOIR_TENANT choose where.
local tenant = os.getenv("RESERVOIR_TENANT")
wrk.body = '{"pool":"' .. (os.getenv("RESERVOIR_POOL") or "h100") .. '",' ..
  (tenant and ('"tenant":"' .. tenant .. '",') or '') ..
  '"gpus":1,"tier":"spot","limit_price":"1.5"}'
