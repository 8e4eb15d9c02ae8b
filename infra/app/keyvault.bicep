// Key Vault for the gateway's secrets: the SPN client secret (the seed's flow), the gateway client keys
// (secrets gateway-key-<client> and gateway-key-<client>-next, both valid at once; the Function reads
// them by name with its managed identity and re-reads them every few minutes, so a rotation needs no
// restart) and optionally the Application Gateway's TLS certificate. Access is Azure RBAC only (no
// access policies).
// (AVM equivalent: br/public:avm/res/key-vault/vault.)

@description('Name of the Key Vault (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the Key Vault.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Days a deleted vault or secret stays recoverable (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Principal id of the Function App identity (gets Key Vault Secrets User to read the SPN secret and the gateway keys).')
param functionPrincipalId string

@description('Object id of the deploying user or principal (gets Key Vault Secrets Officer to store the SPN secret and gateway keys). Empty skips it.')
param principalId string = ''

@description('Kind of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Principal id of the Application Gateway identity (gets Key Vault Secrets User to read its TLS certificate).')
param gatewayPrincipalId string

@description('True when the Application Gateway reads a TLS certificate from this vault.')
param grantGatewayAccess bool = false

@description('Resource id of the Log Analytics workspace that receives the vault audit log.')
param logAnalyticsWorkspaceId string

// Built-in roles.
var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
var secretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109: the Flex Consumption app (no VNet integration) reads its secrets at runtime and the Application Gateway fetches its certificate, so the vault must be reachable; access is RBAC-only and audited.
  //checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109 (public endpoint, Entra ID + RBAC on every call).
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource functionSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource gatewaySecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantGatewayAccess) {
  name: guid(vault.id, gatewayPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: gatewayPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource principalSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(vault.id, principalId, secretsOfficerRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsOfficerRoleId)
    principalId: principalId
    principalType: principalType
  }
}

resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
