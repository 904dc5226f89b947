-- Argo CD health check for ruvector.dev/VectorMigration.
-- Reads the conditions the operator writes (kstatus conventions): Stalled=True is Degraded,
-- Ready=True is Healthy, a migration waiting on a person (approval, a pause, promotion, consent
-- to a restore, a verdict only a person can give) is Suspended, as Argo CD shows a paused Rollout;
-- anything else is Progressing. Install: argocd-cm.yaml in this folder.
local health = {}
local status = obj.status
if status == nil or status.conditions == nil then
  health.status = "Progressing"
  health.message = "waiting for the operator to report a status"
  return health
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < obj.metadata.generation then
  health.status = "Progressing"
  health.message = "the operator has not yet seen the latest spec"
  return health
end
local conditions = {}
for _, condition in ipairs(status.conditions) do
  conditions[condition.type] = condition
end
local function describe(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end
local stalled, ready, reconciling = conditions["Stalled"], conditions["Ready"], conditions["Reconciling"]
local waiting_on_a_person = {
  AwaitingApproval = true, Paused = true, CutoverPaused = true, AwaitingPromotion = true,
  RestoreNeedsConsent = true, VerificationInconclusive = true,
}
if stalled ~= nil and stalled.status == "True" then
  health.status = "Degraded"
  health.message = describe(stalled)
elseif ready ~= nil and ready.status == "True" then
  health.status = "Healthy"
  health.message = describe(ready)
elseif reconciling ~= nil and waiting_on_a_person[reconciling.reason] then
  health.status = "Suspended"
  health.message = describe(reconciling)
else
  health.status = "Progressing"
  health.message = status.message or ((status.phase or "Pending") .. ": in progress")
end
return health
