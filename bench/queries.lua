-- wrk script: POST /v1/classify bodies {"text": ...}, one per query of queries.txt (beside this
-- file), sent in turn by each wrk thread. queries.txt holds every CLINC150 test query (CC BY 3.0),
-- one per line, in a seeded random order (seed 0); it is written by
-- bench/test_bench_http.py:write_queries (shuffled_test_queries(0) in bench/conftest.py).
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t"}
local function json_string(text)
  return '"' .. text:gsub('[%c"\\]', function(c) return escapes[c] or string.format("\\u%04x", c:byte()) end) .. '"'
end
local bodies = {}
for line in io.lines(here .. "queries.txt") do
  bodies[#bodies + 1] = '{"text": ' .. json_string(line) .. "}"
end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end
