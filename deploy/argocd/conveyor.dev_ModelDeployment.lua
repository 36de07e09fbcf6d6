-- Argo CD health of a Conveyor ModelDeployment: Ready, with a failed rollout as Degraded
-- (the deployment still serves its last good model, which the message names).
local hs = {status = "Progressing", message = "Waiting for the Conveyor operator"}
if obj.status == nil or obj.status.conditions == nil then
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
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
elseif progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = progressing.message
elseif ready ~= nil then
  hs.status = "Degraded"
  hs.message = ready.message or ready.reason
end
return hs
