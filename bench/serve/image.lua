-- Image lookups: cycles through the JPEG files listed in $IMAGES (one path per line).
local bodies = {}
for path in io.lines(os.getenv("IMAGES")) do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
local headers = { ["Authorization"] = "Bearer " .. os.getenv("KEY"), ["Content-Type"] = "image/jpeg" }
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/lookup/image", headers, bodies[i])
end
