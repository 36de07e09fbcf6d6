-- Argo CD health of a Conveyor PipelineRun: its Succeeded condition (Unknown while running),
-- as Argo CD reads Tekton's; a run whose model awaits a human's approval is Suspended.
local hs = {status = "Progressing", message = "Waiting for the Conveyor operator"}
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Pending deletion"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local succeeded, awaiting
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Succeeded" then succeeded = c end
  if c.type == "AwaitingApproval" then awaiting = c end
end
-- The operator reads a spec change (cancel, approval) of an unfinished run, or an approval
-- of a finished one; until it has, the status describes the previous spec.
local generation = obj.metadata and tonumber(obj.metadata.generation)
local observed = tonumber(obj.status.observedGeneration)
local lags = generation ~= nil and observed ~= nil and observed < generation
local waiting = awaiting ~= nil and awaiting.status == "True"
local finished = succeeded ~= nil and (succeeded.status == "True" or succeeded.status == "False")
if lags and (not finished or (waiting and obj.spec ~= nil and obj.spec.approval ~= nil)) then
  hs.message = "Waiting for the Conveyor operator to observe generation " .. generation
  return hs
end
if succeeded == nil then
  return hs
end
hs.message = succeeded.message or succeeded.reason
if succeeded.status == "True" and waiting then
  hs.status = "Suspended"
  hs.message = awaiting.message or awaiting.reason
elseif succeeded.status == "True" then
  hs.status = "Healthy"
elseif succeeded.status == "False" and succeeded.reason == "Cancelled" then
  hs.status = "Suspended"
elseif succeeded.status == "False" then
  hs.status = "Degraded"
end
return hs
