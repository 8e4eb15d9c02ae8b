// A Key Vault (Azure RBAC only, soft delete + purge protection, audit log) with exactly one reader: main.bicep
// deploys one for the Function's secrets (gateway keys gateway-key-<client> / -next, read by name and re-read
// while it runs, and the SPN client secret) and one for the Application Gateway's TLS certificate. Each reader
// gets "Key Vault Secrets User" on its own vault only (a certificate's private key is read as a secret); the
// deploying principal gets the officer role it needs to put things in: Secrets Officer for `az keyvault secret
// set`, Certificates Officer for `az keyvault certificate import`.
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

@description('Principal id of the one identity that reads this vault (gets Key Vault Secrets User here).')
param readerPrincipalId string

@description('Object id of the deploying user or principal (gets the officer role of principalRole). Empty skips it.')
param principalId string = ''

@description('Kind of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('What the deploying principal stores here: secrets (Key Vault Secrets Officer) or certificates (Key Vault Certificates Officer).')
@allowed([
  'secrets'
  'certificates'
])
param principalRole string

@description('Resource id of the Log Analytics workspace that receives the vault audit log.')
param logAnalyticsWorkspaceId string

// Built-in roles.
var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
var officerRoleIds = {
  secrets: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  certificates: 'a4417e6f-fecd-4de8-b567-7b0420556985'
}
var officerRoleId = officerRoleIds[principalRole]

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

resource readerSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource principalOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(vault.id, principalId, officerRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', officerRoleId)
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
