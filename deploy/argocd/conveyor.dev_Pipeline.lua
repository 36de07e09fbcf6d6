-- Argo CD health of a Conveyor Pipeline: its Ready condition, once the operator has read the
-- current spec (status.observedGeneration); a Pipeline being deleted is Progressing.
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
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
    elseif c.status == "False" then
      hs.status = "Degraded"
    end
    hs.message = c.message or c.reason
  end
end
return hs
