// Keyless access to one Azure OpenAI resource: "Cognitive Services OpenAI User" for the gateway's
// managed identity and, where asked for, for the SPN of the seed's flow. Deployed at the resource group of
// the OpenAI resource (any subscription) and scoped to the account itself, not to its resource group.
// The SPN grant is opt-in because the seed's SPN usually holds the role already, and an equivalent
// assignment under another name fails the deployment with 409 RoleAssignmentExists (Azure/bicep#5694).

@description('Name of an existing Azure OpenAI (Cognitive Services) account in this resource group.')
param accountName string

@description('Principal id of the gateway Function App identity.')
param functionPrincipalId string

@description('Object id of the service principal (enterprise application) of the seed flow; empty skips it.')
param spnObjectId string = ''

@description('Grant the SPN the role here (false where it holds the role already).')
param grantSpn bool = true

// Built-in role "Cognitive Services OpenAI User": inference and model listing, no keys, no management.
var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource functionOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, functionPrincipalId, openAiUserRoleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource spnOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantSpn && !empty(spnObjectId)) {
  name: guid(account.id, spnObjectId, openAiUserRoleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleId)
    principalId: spnObjectId
    principalType: 'ServicePrincipal'
  }
}
