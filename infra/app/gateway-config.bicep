// The pieces of GATEWAY_CONFIG, the gateway's configuration as inline JSON (the code accepts a file
// path or JSON starting with '{'):
//   {"deployments": {"<logical>": [{"name", "endpoint", "deployment", "tpm", "rpm", "priority",
//                                   "weight", "auth": {"type": "entra"}}, ...]},
//    "clients": [{"name": "app-a", "key_secrets": ["gateway-key-app-a", "gateway-key-app-a-next"]}]}
// Backends are grouped by their logical deployment name. pycep-parser (which checkov uses) knows the
// `filter` lambda but not map/reduce/toObject, so each group is one gateway-config-group.bicep (a
// `filter`) that returns its '"<logical>": [...]' JSON text; main.bicep joins those into the object.
// (A variable loop cannot read module outputs, which are runtime values; an output loop can.)
// No resources are deployed here. Secrets never appear in the JSON: only Key Vault secret names.

@description('Backends: objects {name, endpoint, deployment, logical, tpm, rpm, priority, weight} and optionally auth (default {"type": "entra"}).')
param backends array = []

@description('Gateway clients: objects {name, key_secrets}; key_secrets names the Key Vault secrets holding the client keys.')
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

var clientEntries = [for client in clients: {
  name: client.name
  key_secrets: client.key_secrets
}]

// '"<logical>": [<host>, ...]', one per logical deployment: the members of the "deployments" object.
output deploymentEntries array = [for (logical, i) in logicalNames: groups[i].outputs.entry]
// The "clients" array.
output clients array = clientEntries
