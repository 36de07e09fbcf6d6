-- Argo CD health of a Conveyor ModelDeployment, read as Argo CD reads an Argo Rollout:
-- Progressing until the operator has read the current spec and while a model rolls out
-- (even though the previous model still serves), Degraded when a rollout failed (the
-- deployment serves its last good model, which the message names), then Ready.
local hs = {status = "Progressing", message = "Waiting for the Conveyor operator"}
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Pending deletion"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and tonumber(obj.metadata.generation)
local observed = tonumber(obj.status.observedGeneration)
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "Waiting for the Conveyor operator to observe generation " .. generation
  return hs
end
local ready, progressing
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Progressing" then progressing = c end
end
if progressing ~= nil and progressing.status == "False" and progressing.reason == "RolloutFailed" then
  hs.status = "Degraded"
  hs.message = progressing.message
elseif progressing ~= nil and progressing.status == "True" then
  hs.message = progressing.message or progressing.reason
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message or ready.reason
end
return hs
