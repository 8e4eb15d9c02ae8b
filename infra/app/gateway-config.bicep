// The pieces of GATEWAY_CONFIG, the gateway's configuration as inline JSON (the code accepts a file
// path or JSON starting with '{'):
//   {"deployments": {"<logical>": [{"name", "endpoint", "deployment", "tpm", "priority", "weight",
//                                   "auth": {"type": "entra"}, and "rpm" / "probe" when given}, ...]},
//    "clients": [{"name": "app-a", "key_secrets": ["gateway-key-app-a", "gateway-key-app-a-next"],
//                 and "limits" / "priority" / "admin" / "entra_app_ids" when given}]}
// Backends are grouped by their logical deployment name. pycep-parser (which checkov uses) knows the
// `filter` lambda but not map/reduce/toObject, so each group is one gateway-config-group.bicep (a
// `filter`) that returns its '"<logical>": [...]' JSON text; main.bicep joins those into the object.
// (A variable loop cannot read module outputs, which are runtime values; an output loop can.)
// No resources are deployed here. Secrets never appear in the JSON: only Key Vault secret names.

@description('Backends: objects {name, endpoint, deployment, logical, tpm} and optionally rpm, priority, weight, auth (default {"type": "entra"}) and probe.')
param backends array = []

@description('Gateway clients: objects {name} and optionally limits, priority, admin, entra_app_ids; passed through, with their key_secrets added.')
param clients array = []

var backendLogicalNames = [for backend in backends: backend.logical]
// union() keeps each value once: one group per logical deployment name.
var logicalNames = union(backendLogicalNames, [])

module groups 'gateway-config-group.bicep' = [for (logical, i) in logicalNames: {
  name: take('gateway-config-${i}-${uniqueString(logical)}', 64)
  params: {
    logical: logical
    backends: backends
  }
}]

// Each client's keys are two Key Vault secrets (both valid at once, so a key rotates without downtime), read by
// name with the Function's managed identity and re-read while it runs: no app setting, no restart. Every other
// field passes through, so a new client option needs no template change.
var clientEntries = [for client in clients: union(client, {
  key_secrets: [
    'gateway-key-${client.name}'
    'gateway-key-${client.name}-next'
  ]
})]

// '"<logical>": [<host>, ...]', one per logical deployment: the members of the "deployments" object.
output deploymentEntries array = [for (logical, i) in logicalNames: groups[i].outputs.entry]
// The "clients" array.
output clients array = clientEntries
