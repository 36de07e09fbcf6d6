-- Argo CD health of a Conveyor PipelineRun: its Succeeded condition (Unknown while running).
local hs = {status = "Progressing", message = "Waiting for the Conveyor operator"}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Succeeded" then
      hs.message = c.message or c.reason
      if c.status == "True" then
        hs.status = "Healthy"
      elseif c.status == "False" and c.reason == "Cancelled" then
        hs.status = "Suspended"
      elseif c.status == "False" then
        hs.status = "Degraded"
      else
        hs.status = "Progressing"
      end
    end
  end
end
return hs
