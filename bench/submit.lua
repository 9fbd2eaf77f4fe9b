-- wrk script: durable job submissions (POST /v1/jobs). Token from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RESERVOIR_TOKEN")
wrk.body = '{"pool":"h100","gpus":1,"tier":"spot","limit_price":"1.5"}'
