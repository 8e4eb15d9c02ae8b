// User-assigned managed identities.
// - api: the Function App's identity. It reads host storage, the gateway tables, the secrets of the
//   gateway vault (SPN secret, gateway keys) and calls every Azure OpenAI resource with an Entra ID token
//   ("Cognitive Services OpenAI User"). AZURE_CLIENT_ID names it to DefaultAzureCredential.
// - gateway: the Application Gateway's identity, used only to read its TLS certificate from the TLS vault.
//   It is free and always created, with its role, so a certificate can be added later without replacing
//   the gateway or waiting for a role to propagate.
// (AVM equivalent: br/public:avm/res/managed-identity/user-assigned-identity.)

@description('Name of the Function App identity.')
param apiIdentityName string

@description('Name of the Application Gateway identity.')
param gatewayIdentityName string

@description('Azure region of the identities.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

resource apiIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: apiIdentityName
  location: location
  tags: tags
}

resource gatewayIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: gatewayIdentityName
  location: location
  tags: tags
}

output apiIdentityId string = apiIdentity.id
output apiIdentityName string = apiIdentity.name
output apiClientId string = apiIdentity.properties.clientId
output apiPrincipalId string = apiIdentity.properties.principalId
output gatewayIdentityId string = gatewayIdentity.id
output gatewayPrincipalId string = gatewayIdentity.properties.principalId
