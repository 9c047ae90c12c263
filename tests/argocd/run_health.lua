-- Runs an Argo CD health script the way Argo CD runs one from argocd-cm, under
-- Lua 5.1 (Debian's lua5.1; Argo uses gopher-lua, also 5.1):
--
--   lua5.1 run_health.lua health.lua object.yaml
--
-- prints "status<TAB>message" and exits 0, or prints the error and exits 1.
--
-- The script sees only what Argo's production sandbox opens: the base library,
-- table, package (require serves the safe os only) and an os with time and date.
-- No string library: `string` is absent and string values have no methods, so a
-- script that calls string.find or s:find fails here as it would in Argo CD.
local lyaml = require("lyaml")

local function read(path)
  local file = assert(io.open(path, "rb"))
  local content = file:read("*a")
  file:close()
  return content
end

-- Argo hands the script the object decoded from JSON: YAML nulls become nil.
local function strip_nulls(value)
  if value == lyaml.null then
    return nil
  end
  if type(value) == "table" then
    local out = {}
    for k, v in pairs(value) do
      out[k] = strip_nulls(v)
    end
    return out
  end
  return value
end

local script_path, object_path = arg[1], arg[2]
if script_path == nil or object_path == nil then
  io.stderr:write("usage: lua5.1 run_health.lua health.lua object.yaml\n")
  os.exit(2)
end
local chunk, syntax = loadstring(read(script_path), "=" .. script_path)
if chunk == nil then
  print("error\t" .. syntax)
  os.exit(1)
end
local object = strip_nulls(lyaml.load(read(object_path)))

local real_time, real_date = os.time, os.date
local safe_os = { time = real_time, date = real_date }
local env = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
  print = print, rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
  setmetatable = setmetatable, getmetatable = getmetatable, tonumber = tonumber,
  tostring = tostring, type = type, unpack = unpack, xpcall = xpcall, _VERSION = _VERSION,
  table = { concat = table.concat, insert = table.insert, remove = table.remove,
            sort = table.sort, getn = table.getn, maxn = table.maxn },
  os = safe_os,
  package = { loaded = { os = safe_os } },
  require = function(name)
    if name == "os" then
      return safe_os
    end
    error("module '" .. tostring(name) .. "' not found", 2)
  end,
  obj = object,
}
env._G = env
setfenv(chunk, env)

-- Without the string library gopher-lua's strings have no methods; in PUC Lua
-- they find them through the string metatable, so take that away for the run.
local string_meta = getmetatable("")
local string_index = string_meta.__index
string_meta.__index = nil
local ok, result = pcall(chunk)
string_meta.__index = string_index

if not ok then
  print("error\t" .. tostring(result))
  os.exit(1)
end
if type(result) ~= "table" then
  print("error\tthe script returned " .. type(result) .. ", not a table")
  os.exit(1)
end
local valid = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }
if not valid[result.status] then
  print("error\tinvalid health status " .. tostring(result.status))
  os.exit(1)
end
print(result.status .. "\t" .. tostring(result.message or ""))
