-- Single-hash GET lookups, cycling through the hashes in $HASHES (one hex hash per line).
local hashes = {}
for line in io.lines(os.getenv("HASHES")) do hashes[#hashes + 1] = line end
local headers = { ["Authorization"] = "Bearer " .. os.getenv("KEY") }
local i = math.random(#hashes)
request = function()
  i = i % #hashes + 1
  return wrk.format("GET", "/v1/lookup?hash=" .. hashes[i], headers)
end
