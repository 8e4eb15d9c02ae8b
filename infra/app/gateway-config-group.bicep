// The hosts of one logical deployment, in the shape the gateway's config loader expects, as the JSON
// text '"<logical>": [<host>, ...]'. gateway-config.bicep deploys one per logical deployment name.
// No resources.

@description('Logical deployment name the clients use (for example gpt-4o).')
param logical string

@description('All backends: objects {name, endpoint, deployment, logical, tpm} and optionally rpm, priority, weight, auth and probe.')
param backends array

var matching = filter(backends, backend => backend.logical == logical)

var requiredFields = [for backend in matching: {
  name: backend.name
  endpoint: backend.endpoint
  deployment: backend.deployment
  tpm: backend.tpm
  priority: backend.?priority ?? 1
  weight: backend.?weight ?? 1
  auth: backend.?auth ?? {
    type: 'entra'
  }
}]

// rpm (default: 6 per 1,000 TPM) and probe (default: GET /openai/models) only when given: the gateway
// derives its own defaults, and a null would be invalid.
var hosts = [for (backend, i) in matching: union(requiredFields[i], contains(backend, 'rpm') ? { rpm: backend.rpm } : {}, contains(backend, 'probe') ? { probe: backend.probe } : {})]

output entry string = '"${logical}": ${string(hosts)}'
