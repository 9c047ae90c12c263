-- Argo CD health of a referral.dev/v1alpha1 ReferralSystem.
-- Reads spec.paused, the generations and condition types and reasons only,
-- never free text. Argo CD runs scripts from argocd-cm without the string library
-- (base, table, package and a safe os only), so no string functions or methods.
local hs = {}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c)
  local reason = c.reason or "Unknown"
  if c.message == nil or c.message == "" then
    return reason
  end
  return reason .. ": " .. c.message
end

-- Ready reasons that need a person: nothing will change until someone acts.
local needsAction = {
  InvalidSpec = true,
  SecretMissing = true,
  ApplyFailed = true,
  RolloutStuck = true,
  InvalidURI = true,
  AuthenticationFailed = true,
  PasswordRequired = true,
  PreUpgradeBackupFailed = true,
  MigrationFailed = true,
  RolloutStalled = true,
  RolledBack = true,
}

-- Summaries of data checks: a False one does not make the system unhealthy, but
-- the message says so.
local watched = { "IndexesReady", "ChainIntegrity", "BackupHealthy" }

local spec = obj.spec or {}
local generation = (obj.metadata or {}).generation
local status = obj.status

if spec.paused == true then
  hs.status = "Suspended"
  hs.message = "spec.paused is true: the operator does not change this system's children"
  return hs
end

if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to process generation " .. generation
  if status.observedGeneration ~= nil then
    hs.message = hs.message .. " (status describes generation " .. status.observedGeneration .. ")"
  end
  return hs
end

local ready = find(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. generation
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  local attention = {}
  for _, kind in ipairs(watched) do
    local c = find(status.conditions, kind)
    if c ~= nil and c.status == "False" then
      table.insert(attention, kind .. " (" .. text(c) .. ")")
    end
  end
  if #attention > 0 then
    hs.message = hs.message .. "; attention: " .. table.concat(attention, "; ")
  end
  return hs
end

if ready.reason == "Stopped" then
  hs.status = "Suspended"
  hs.message = text(ready)
  return hs
end

if ready.status == "False" and needsAction[ready.reason] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = text(ready)
return hs
