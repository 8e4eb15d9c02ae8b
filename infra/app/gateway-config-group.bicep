// The hosts of one logical deployment, in the shape the gateway's config loader expects, as the JSON
// text '"<logical>": [<host>, ...]'. gateway-config.bicep deploys one per logical deployment name.
// No resources.

@description('Logical deployment name the clients use (for example gpt-4o).')
param logical string

@description('All backends: objects {name, endpoint, deployment, logical, tpm, rpm, priority, weight} and optionally auth.')
param backends array

var matching = filter(backends, backend => backend.logical == logical)

var hosts = [for backend in matching: {
  name: backend.name
  endpoint: backend.endpoint
  deployment: backend.deployment
  tpm: backend.tpm
  rpm: backend.rpm
  priority: backend.?priority ?? 1
  weight: backend.?weight ?? 1
  auth: backend.?auth ?? {
    type: 'entra'
  }
}]

output entry string = '"${logical}": ${string(hosts)}'
