-- Argo CD health of a Conveyor Pipeline: its Ready condition.
local hs = {status = "Progressing", message = "Waiting for the Conveyor operator"}
if obj.status ~= nil and obj.status.conditions ~= nil then
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
end
return hs
