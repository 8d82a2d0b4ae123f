-- wrk -s query.lua: POST the bench query (20 books with their authors).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"query":"query Books($n: Int!) { books(first: $n) { id title author { id name } } }","variables":{"n":20}}'
